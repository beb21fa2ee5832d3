"""Conventions every layer shares (docs/ARCHITECTURE: token grids).

TOKEN_PX: one LLM visual token covers TOKEN_PX x TOKEN_PX pixels of the processor's resized
image: Qwen2.5-VL's vision patch_size (14) times its spatial_merge_size (2). vla/loading.py
refuses a checkpoint whose vision config says otherwise, so grids, heatmaps and masks agree.
"""

TOKEN_PX = 28
