"""AFBR training of ReconPruner with Hugging Face accelerate: one CPU, one GPU, or many GPUs
through `accelerate launch` / torchrun, with no code change.

Output directory (`--out`):
    config.json, model.safetensors   the trained ReconPruner (`--pruner recon --pruner-weights`),
                                     written only when training reaches its last step, so a
                                     killed or --until-step run never leaves a final-looking one
    decoder/                         the reconstruction decoder (for inspection / fine-tuning)
    checkpoints/step-00000500/       full training state (safetensors + JSON, no pickle); its
                                     pruner/ is that step's ReconPruner (usable the same way)
    train_log.jsonl                  one line per log interval: loss terms, fg_fraction, lr
    previews/step-N.png              image | GT mask | kept top 50% | D(V_fore) | D(V_back)
    eval.json                        held-out foreground coverage (if --val-fraction > 0), per
                                     held-out scene too for nuScenes data
A rerun with the same --out resumes from the newest complete checkpoint at the same step, data
order included (seeded sampler + skipped batches).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fastdrivevla_ros.errors import CheckpointError, ConfigError, DataError
from fastdrivevla_ros.files import write_json
from fastdrivevla_ros.training.data import token_grid
from fastdrivevla_ros.vla.settings import DEFAULTS

COLLAPSE_LOW, COLLAPSE_HIGH = 0.02, 0.98   # share of tokens scored foreground
# settings a resumed run may change: where and how often it reports, not what it computes
RESUMABLE_CHANGES = ("out", "until_step", "resume", "progress", "num_workers", "feature_cache",
                     "keep_checkpoints", "save_every", "log_every", "previews")


@dataclass
class TrainConfig:
    model: str
    data: str
    out: str
    masks: tuple[str, ...] = ()           # default: DATA/masks
    max_pixels: int = DEFAULTS["max_pixels"]
    image_size: tuple[int, int] | None = None
    epochs: int = 10
    max_steps: int | None = None          # total optimizer steps (defines the cosine schedule)
    until_step: int | None = None         # stop early at this step (resume later)
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    mode: str = "afbr"
    lam: float = 0.2
    alpha: float = 0.5
    padding: str = "learned"
    decoder_warmup_steps: int = 200       # first steps train only the decoder (random splits)
    decoder_lr_scale: float = 0.1         # decoder lr / scorer lr after the warm-up
    decoder_layers: int = 6
    decoder_init: str = "vla"
    init_layer: int = 0
    save_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    val_fraction: float = 0.0             # held-out share of the scenes (images without tables)
    split: str | None = None              # official nuScenes split (data/splits.py)
    scenes: tuple[str, ...] = ()          # nuScenes scene names
    allow_val: bool = False               # let val scenes (what replay evaluates) into training
    nuscenes_version: str | None = None   # table folder in --data (default: the only one)
    seed: int = 0
    resume: bool = True
    mixed_precision: str = "no"
    dtype: str = "float32"
    feature_cache: str | None = None
    num_workers: int = 0
    progress: bool = True
    previews: int = 4                     # images in OUT/previews/step-N.png (0: none)

    def __post_init__(self):
        from fastdrivevla_ros.training.afbr import MODES

        self.masks = tuple(self.masks) or (str(Path(self.data) / "masks"),)
        self.scenes = tuple(self.scenes or ())
        checks = {
            "epochs >= 1": self.epochs >= 1, "batch_size >= 1": self.batch_size >= 1,
            "grad_accum >= 1": self.grad_accum >= 1, "lr > 0": self.lr > 0,
            "save_every >= 1": self.save_every >= 1, "log_every >= 1": self.log_every >= 1,
            "keep_checkpoints >= 1": self.keep_checkpoints >= 1,
            "max_steps >= 1": self.max_steps is None or self.max_steps >= 1,
            "until_step >= 1": self.until_step is None or self.until_step >= 1,
            "warmup_steps >= 0": self.warmup_steps >= 0,
            "decoder_warmup_steps >= 0": self.decoder_warmup_steps >= 0,
            "0 <= decoder_lr_scale <= 10": 0 <= self.decoder_lr_scale <= 10,
            f"mode in {MODES}": self.mode in MODES,
            "decoder_init in (vla, random)": self.decoder_init in ("vla", "random"),
            "padding in (zero, learned)": self.padding in ("zero", "learned"),
            "mixed_precision in (no, fp16, bf16)": self.mixed_precision in ("no", "fp16", "bf16"),
            "0 <= val_fraction < 1": 0 <= self.val_fraction < 1,
            "0 <= previews <= 16": 0 <= self.previews <= 16,
        }
        if self.mode == "mask_prediction":
            self.decoder_warmup_steps = 0     # no decoder to warm up
        if self.max_steps is not None and self.decoder_warmup_steps >= self.max_steps:
            checks["decoder_warmup_steps < max_steps"] = False
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"invalid training settings; need {', '.join(bad)}")
        if self.image_size is not None:
            self.image_size = tuple(int(v) for v in self.image_size)


def lr_lambdas(cfg: TrainConfig, total_steps: int):
    """Learning-rate factors (pruner, decoder side) per optimizer step: during the decoder warm-up
    the pruner rests and the decoder trains at the full lr; afterwards both follow one cosine
    schedule (with cfg.warmup_steps of linear warm-up), the decoder scaled by decoder_lr_scale."""
    w, ramp = cfg.decoder_warmup_steps, cfg.warmup_steps

    def after(step: int) -> float:      # transformers' cosine-with-warmup, from step w on
        step -= w
        if step < ramp:
            return step / max(1, ramp)
        progress = (step - ramp) / max(1, total_steps - w - ramp)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return [lambda step: 0.0 if step < w else after(step),
            lambda step: 1.0 if step < w else cfg.decoder_lr_scale * after(step)]


# ---------------------------------------------------------------------------- state files
def _save_optimizer(optimizer, path: Path) -> None:
    """AdamW state as safetensors (tensors) + JSON (param groups, non-tensor entries)."""
    from safetensors.torch import save_file

    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    save_file(tensors, str(path / "optimizer.safetensors"))
    (path / "optimizer.json").write_text(json.dumps({"param_groups": sd["param_groups"],
                                                     "scalars": scalars}))


def _load_optimizer(optimizer, path: Path) -> None:
    from safetensors.torch import load_file

    meta = json.loads((path / "optimizer.json").read_text())
    state: dict[int, dict] = {}
    for name, v in [*load_file(str(path / "optimizer.safetensors")).items(),
                    *meta["scalars"].items()]:
        idx, k = name.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first (an interrupted save leaves only a .tmp folder)."""
    return sorted(p for p in (out / "checkpoints").glob("step-*")
                  if not p.name.endswith(".tmp") and (p / "trainer_state.json").is_file())


# ---------------------------------------------------------------------------- trainer
def model_identity(cfg: TrainConfig) -> str | None:
    """Content digest of the VLA the pruner is trained on (its vision weights shape it)."""
    from fastdrivevla_ros.files import MODEL_SUFFIXES, path_digest

    path = Path(cfg.model).expanduser()
    return path_digest(path, suffixes=MODEL_SUFFIXES) if path.is_dir() else None


def _comparable(config: dict) -> dict:
    """A TrainConfig dict as JSON sees it (tuples -> lists), without RESUMABLE_CHANGES."""
    plain = json.loads(json.dumps(config, default=str))
    return {k: v for k, v in plain.items() if k not in RESUMABLE_CHANGES}


def check_resume(cfg: TrainConfig) -> Path | None:
    """The checkpoint a run into cfg.out would resume from, after checking it was trained with
    the same settings and the same VLA weights (ConfigError listing the differences; nothing
    is loaded or written before)."""
    found = _checkpoints(Path(cfg.out)) if cfg.resume else []
    if not found:
        return None
    ckpt = found[-1]
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text())
        old = _comparable(state["config"]) | {"model_identity": state.get("model_identity")}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{ckpt / 'trainer_state.json'}: unreadable ({e}); delete "
                              f"{ckpt} to resume from an older checkpoint, or pass "
                              "--no-resume") from e
    from fastdrivevla_ros.checkpoint import check_safetensors

    for name in ("model.safetensors", "optimizer.safetensors"):
        try:
            check_safetensors(ckpt / name)
        except CheckpointError as e:
            raise CheckpointError(f"{e}; delete {ckpt} to resume from the checkpoint before "
                                  "it, or pass --no-resume") from None
    new = _comparable(asdict(cfg)) | {"model_identity": model_identity(cfg)}
    diff = [f"{k}: {old.get(k)!r} != {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]
    if diff:
        raise ConfigError(f"{cfg.out} holds a training run with other settings (checkpoint != "
                          f"now: {'; '.join(diff)}); resume with the same settings, or use "
                          "another --out (or --no-resume to start over there)")
    return ckpt


class Trainer:
    def __init__(self, cfg: TrainConfig):
        from accelerate import Accelerator
        from accelerate.utils import (DataLoaderConfiguration, DistributedDataParallelKwargs,
                                      set_seed)

        check_resume(cfg)                 # before the model loads or anything is written
        self.cfg, self.out = cfg, Path(cfg.out)
        self.model_identity = model_identity(cfg)
        self.acc = Accelerator(
            mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum,
            # the decoder warm-up leaves the pruner out of the graph
            kwargs_handlers=[DistributedDataParallelKwargs(
                find_unused_parameters=cfg.decoder_warmup_steps > 0)],
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True,
                                                      data_seed=cfg.seed))
        set_seed(cfg.seed)
        self.step = self.epoch = self.batches_in_epoch = 0
        self._build()

    # --------------------------------------------------------------------- setup
    def _build(self) -> None:
        from fastdrivevla_ros.pruning.recon import ReconPruner, vision_fingerprint
        from fastdrivevla_ros.training.afbr import AFBRModel
        from fastdrivevla_ros.training.data import (FrozenVision, ImageMaskDataset, collate,
                                                    find_pairs, select_scenes_of_pairs,
                                                    split_pairs)
        from fastdrivevla_ros.training.decoder import ReconDecoder
        from fastdrivevla_ros.vla.loading import load_vla

        cfg = self.cfg
        pairs, unmasked = find_pairs(cfg.data, list(cfg.masks))
        if unmasked:
            self.log_text(f"{len(unmasked)} image(s) have no mask and are skipped, e.g. "
                          f"{unmasked[:3]}")
        if not pairs:
            raise DataError(f"no image+mask pairs under {cfg.data} with masks in "
                            f"{list(cfg.masks)} (layout: MASKS/<image relative path>.png)")
        pairs, self.scene_of, left_out = select_scenes_of_pairs(
            pairs, cfg.data, cfg.split, cfg.scenes, cfg.allow_val, cfg.nuscenes_version)
        if left_out:
            self.log_text(f"{left_out} image(s) of val scenes (what replay evaluates) are left "
                          "out; --allow-val would use them")
        if not pairs:
            raise DataError(f"no image+mask pairs left under {cfg.data} for the chosen scenes "
                            f"(split {cfg.split}, scenes {list(cfg.scenes) or 'all'})")
        self.train_pairs, self.val_pairs = split_pairs(pairs, cfg.val_fraction, self.scene_of)
        if not self.train_pairs:
            raise DataError("every pair landed in the held-out split (it holds whole scenes); "
                            "lower --val-fraction or add scenes")

        model, _, processor = load_vla(cfg.model, cfg.dtype, "cpu")
        self.processor = processor
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            pruner = ReconPruner.from_vla(model, cfg.init_layer, source=cfg.model)
            decoder = (None if cfg.mode == "mask_prediction" else
                       ReconDecoder.from_vla(model, cfg.decoder_layers, cfg.decoder_init))
        tag = f"{vision_fingerprint(model)}|{cfg.max_pixels}|{cfg.image_size}"
        self.vision = FrozenVision(model.model.visual.to(self.acc.device), cfg.feature_cache, tag)
        del model   # the LLM is no longer needed: only its layers' copies are trained

        net = AFBRModel(pruner.float(), decoder.float() if decoder else None, cfg.mode,
                        cfg.lam, cfg.alpha, cfg.padding)
        dataset = ImageMaskDataset(self.train_pairs, processor, cfg.max_pixels, cfg.image_size)
        self.preview_batch = self._preview_batch(
            ImageMaskDataset(self.val_pairs or self.train_pairs, processor, cfg.max_pixels,
                             cfg.image_size))
        loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True,
                                             collate_fn=collate, num_workers=cfg.num_workers)
        # group 0: the pruner (scorer); group 1: the decoder side (decoder + padding token)
        decoder_side = [p for n, p in net.named_parameters() if not n.startswith("pruner.")]
        groups = [{"params": list(net.pruner.parameters())}]
        if decoder_side:
            groups.append({"params": decoder_side})
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.net, self.optimizer, self.loader = self.acc.prepare(net, optimizer, loader)
        per_epoch = math.ceil(len(self.loader) / cfg.grad_accum)
        self.total_steps = cfg.max_steps or cfg.epochs * per_epoch + cfg.decoder_warmup_steps
        self.epochs = math.ceil(self.total_steps / per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambdas(cfg, self.total_steps)[:len(groups)])
        self.warmup_generator = torch.Generator()

    def _preview_batch(self, dataset) -> dict | None:
        """The first `previews` images (held-out ones if any) that share the first one's grid."""
        from fastdrivevla_ros.training.data import collate

        if not self.cfg.previews:
            return None
        items = [dataset[i] for i in range(min(len(dataset), 4 * self.cfg.previews))]
        same = [it for it in items if torch.equal(it["grid_thw"], items[0]["grid_thw"])]
        return collate(same[:self.cfg.previews])

    def save_preview(self, net) -> Path | None:
        from fastdrivevla_ros.training.preview import save_preview

        if self.preview_batch is None:
            return None
        b = self.preview_batch
        grid = token_grid(b["grid_thw"][0])
        v = self.vision(b, self.acc.device).float()
        dev = self.acc.device
        return save_preview(net, v, b["image"].to(dev), b["mask"].to(dev), grid, b["keys"],
                            self.out / "previews" / f"step-{self.step:08d}.png")

    # --------------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path | None:
        """Full state under checkpoints/step-N (written to a .tmp folder, then renamed), plus the
        current pruner/decoder export in the output directory."""
        from safetensors.torch import save_file

        self.acc.wait_for_everyone()
        final = self.out / "checkpoints" / f"step-{self.step:08d}"
        if self.acc.is_main_process:
            net = self.acc.unwrap_model(self.net)
            tmp = final.with_name(final.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
                      str(tmp / "model.safetensors"))
            _save_optimizer(self.optimizer, tmp)
            state = {"step": self.step, "epoch": self.epoch,
                     "batches_in_epoch": self.batches_in_epoch,
                     "scheduler": self.scheduler.state_dict(), "config": asdict(self.cfg),
                     "model_identity": self.model_identity}
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2, default=str))
            self.export(net, tmp / "pruner", decoder=False)
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            for old in _checkpoints(self.out)[:-self.cfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            if self.step >= self.total_steps:
                self.export(net, self.out)
            self.save_preview(net)
        self.acc.wait_for_everyone()
        return final

    def export(self, net, where: Path, decoder: bool = True) -> None:
        net.pruner.config.training = {"steps": self.step, "total_steps": self.total_steps,
                                      "mode": self.cfg.mode,
                                      "data": str(self.cfg.data), "lr": self.cfg.lr,
                                      "max_pixels": self.cfg.max_pixels,
                                      "image_size": self.cfg.image_size}
        net.pruner.save_pretrained(where)
        if decoder and net.decoder is not None:
            net.decoder.save_pretrained(where / "decoder")

    def maybe_resume(self) -> bool:
        from safetensors.torch import load_file

        found = _checkpoints(self.out) if self.cfg.resume else []
        if not found:
            return False
        ckpt = found[-1]
        try:
            state = json.loads((ckpt / "trainer_state.json").read_text())
            net = self.acc.unwrap_model(self.net)
            net.load_state_dict(load_file(str(ckpt / "model.safetensors")), strict=True)
            _load_optimizer(self.optimizer, ckpt)
            self.scheduler.load_state_dict(state["scheduler"])
            self.step, self.epoch = int(state["step"]), int(state["epoch"])
            self.batches_in_epoch = int(state["batches_in_epoch"])
        except (OSError, KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"cannot resume from {ckpt}: {e}; delete it to start over or "
                                  "pass --no-resume") from e
        self._forget_log_after(self.step)
        self.log_text(f"resumed from {ckpt} at step {self.step}")
        return True

    def _forget_log_after(self, step: int) -> None:
        """Drop train_log.jsonl rows past the resumed checkpoint: those steps are redone."""
        from fastdrivevla_ros.files import write_text

        path = self.out / "train_log.jsonl"
        if not self.acc.is_main_process or not path.is_file():
            return
        lines = path.read_text().splitlines(keepends=True)
        keep = [ln for ln in lines if ln.endswith("\n") and _log_step(ln) <= step]
        if keep != lines:
            write_text(path, "".join(keep))

    # --------------------------------------------------------------------- loop
    def log_text(self, msg: str) -> None:
        from tqdm.auto import tqdm

        if self.acc.is_main_process:
            tqdm.write(f"[train-pruner] {msg}")

    def train(self) -> dict:
        from tqdm.auto import tqdm

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        self.maybe_resume()
        stop = min(self.total_steps, cfg.until_step or self.total_steps)
        start_step, t0 = self.step, time.perf_counter()
        bar = tqdm(total=stop, initial=self.step, desc="train-pruner", unit="step",
                   disable=not (cfg.progress and self.acc.is_main_process), dynamic_ncols=True)
        window: list[dict] = []
        while self.step < stop and self.epoch < self.epochs:
            self.loader.set_epoch(self.epoch)
            batches = (self.acc.skip_first_batches(self.loader, self.batches_in_epoch)
                       if self.batches_in_epoch else self.loader)
            for batch in batches:
                stats = self.train_batch(batch)
                self.batches_in_epoch += 1
                if stats is None:          # still accumulating gradients
                    continue
                self.step += 1
                bar.update(1)
                window.append(stats)
                if (self.step % cfg.log_every == 0 or self.step == stop
                        or self.step == cfg.decoder_warmup_steps):   # rows never mix phases
                    row = self.log_row(window)
                    window = []
                    bar.set_postfix(loss=f"{row['loss']:.4f}",
                                    fg=f"{row.get('fg_fraction', float('nan')):.2f}",
                                    phase="decoder warm-up" if row["decoder_warmup"] else "afbr")
                if self.step % cfg.save_every == 0 or self.step == stop:
                    self.save_checkpoint()
                if self.step >= stop:
                    break
            else:
                self.epoch, self.batches_in_epoch = self.epoch + 1, 0
        bar.close()
        if self.step not in {int(p.name.split("-")[1]) for p in _checkpoints(self.out)}:
            self.save_checkpoint()
        done = self.step - start_step
        summary = {"step": self.step, "total_steps": self.total_steps,
                   "sec_per_step": (time.perf_counter() - t0) / done if done else None,
                   "train_images": len(self.train_pairs), "val_images": len(self.val_pairs)}
        if self.val_pairs and self.step >= self.total_steps:
            summary["eval"] = self.evaluate()
        return summary

    def train_batch(self, batch: dict) -> dict | None:
        """One micro-batch; returns the detached stats when an optimizer step was taken."""
        v = self.vision(batch, self.acc.device)
        grid = token_grid(batch["grid_thw"][0])
        warmup = self.step < self.cfg.decoder_warmup_steps
        with self.acc.accumulate(self.net):
            if warmup:    # seeded per step: a resumed run draws the same random splits
                self.warmup_generator.manual_seed(self.cfg.seed * 1_000_003 + self.step)
            out = self.net(v, batch["image"], batch["mask"], grid,
                           self.warmup_generator if warmup else None)
            self.acc.backward(out["loss"])
            if self.acc.sync_gradients and self.cfg.max_grad_norm > 0:
                self.acc.clip_grad_norm_(self.net.parameters(), self.cfg.max_grad_norm)
            self.optimizer.step()
            if self.acc.sync_gradients:
                self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        if not self.acc.sync_gradients:
            return None
        from fastdrivevla_ros.training.afbr import token_foreground

        stats = {k: float(v.detach()) for k, v in out.items() if k != "scores" and v.ndim == 0}
        stats["decoder_warmup"] = float(warmup)
        stats["gt_fg_fraction"] = float((token_foreground(batch["mask"]) > 0.5).float().mean())
        return stats

    def log_row(self, window: list[dict]) -> dict:
        """Mean of the window's stats over steps and processes; appended to train_log.jsonl."""
        keys = sorted(window[0])
        local = torch.tensor([[s[k] for k in keys] for s in window], device=self.acc.device)
        mean = self.acc.reduce(local.mean(0), reduction="mean").tolist()
        lrs = self.scheduler.get_last_lr()
        row = {"step": self.step, "epoch": self.epoch, "lr": lrs[0],
               **({"lr_decoder": lrs[1]} if len(lrs) > 1 else {}), **dict(zip(keys, mean))}
        if self.acc.is_main_process:
            with open(self.out / "train_log.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            fg = row.get("fg_fraction", 0.5)   # absent during the decoder warm-up
            if fg < COLLAPSE_LOW or fg > COLLAPSE_HIGH:
                self.log_text(f"step {self.step}: {fg:.1%} of tokens scored foreground, the "
                              "scorer is collapsing (all-" +
                              ("background" if fg < COLLAPSE_LOW else "foreground") + ")")
        return row

    @torch.no_grad()
    def evaluate(self, ratio: float = 0.5) -> dict:
        """Held-out share of foreground tokens kept by the top-(1 - ratio) scores, against a
        random scorer (expected 1 - ratio). Written to eval.json."""
        from fastdrivevla_ros.pruning.recon import grid_position_ids
        from fastdrivevla_ros.training.afbr import foreground_coverage, token_foreground
        from fastdrivevla_ros.training.data import ImageMaskDataset, collate

        net = self.acc.unwrap_model(self.net).eval()
        data = ImageMaskDataset(self.val_pairs, self.processor, self.cfg.max_pixels,
                                self.cfg.image_size)
        gen = torch.Generator().manual_seed(self.cfg.seed)
        ours, rand, keys = [], [], []
        for item in data:
            keys.append(item["key"])
            batch = collate([item])
            grid = token_grid(item["grid_thw"])
            s = net.pruner(self.vision(batch, self.acc.device),
                           grid_position_ids(grid, device=self.acc.device))[0].cpu()
            fg = token_foreground(batch["mask"])[0] > 0.5
            ours.append(foreground_coverage(s, fg, ratio))
            rand.append(foreground_coverage(torch.rand(len(s), generator=gen), fg, ratio))
        net.train()
        keep = [i for i, c in enumerate(ours) if not math.isnan(c)]
        result = {"ratio": ratio, **_coverage(keep, ours, rand)}
        if self.scene_of is not None:          # nuScenes: the held-out set is whole scenes
            scenes = sorted({self.scene_of[keys[i]] for i in keep})
            result["scenes"] = {name: _coverage([i for i in keep
                                                 if self.scene_of[keys[i]] == name], ours, rand)
                                for name in scenes}
        if self.acc.is_main_process:
            write_json(self.out / "eval.json", result, indent=2)
        return result


def _log_step(line: str) -> float:
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf                   # a torn or foreign line: dropped with the redone rows


def _coverage(indices: list[int], ours: list[float], rand: list[float]) -> dict:
    """Mean coverage of the scorer and of the random scorer over `indices`."""
    n = max(len(indices), 1)
    return {"images": len(indices), "coverage": sum(ours[i] for i in indices) / n,
            "random_coverage": sum(rand[i] for i in indices) / n}


def train(cfg: TrainConfig) -> dict:
    return Trainer(cfg).train()
