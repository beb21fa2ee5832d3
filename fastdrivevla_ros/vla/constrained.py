"""Grammar-constrained decoding (xgrammar): the model can only emit a well-formed plan.

The grammar is Impromptu-VLA's reply: `<PLANNING>` + fixed header + six `[x, y]` pairs with
two decimals (|v| < 1000 m) + `</PLANNING>`, then the end-of-turn token. Every path through it
is finite, so even a random model terminates with 6 parseable waypoints.
"""

from __future__ import annotations

import json

import torch

from fastdrivevla_ros.vla.prompt import NUM_WAYPOINTS, PLANNING_HEADER


def planning_grammar() -> str:
    points = ' ", " '.join(["point"] * NUM_WAYPOINTS)
    return (
        f'root ::= "<PLANNING>" {json.dumps(PLANNING_HEADER)} {points} "</PLANNING>"\n'
        'point ::= "[" num ", " num "]"\n'
        'num ::= "-"? [0-9] [0-9]? [0-9]? "." [0-9] [0-9]\n')


class PlanningConstraint:
    """Compiled once per tokenizer; `start()` gives a fresh per-reply matcher."""

    def __init__(self, tokenizer, vocab_size: int, stop_token_ids: list[int]):
        import xgrammar as xgr

        self._xgr = xgr
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                  stop_token_ids=stop_token_ids)
        self.vocab_size = vocab_size
        self.compiled = xgr.GrammarCompiler(info).compile_grammar(planning_grammar())

    def start(self) -> "_Matcher":
        return _Matcher(self)


class _Matcher:
    def __init__(self, constraint: PlanningConstraint):
        xgr = constraint._xgr
        self._xgr = xgr
        self.matcher = xgr.GrammarMatcher(constraint.compiled)
        self.bitmask = xgr.allocate_token_bitmask(1, constraint.vocab_size)

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """logits: [V] -> the same tensor with grammar-forbidden tokens at -inf."""
        self.matcher.fill_next_token_bitmask(self.bitmask)
        row = logits.float().unsqueeze(0).cpu()
        self._xgr.apply_token_bitmask_inplace(row, self.bitmask)
        return row[0].to(logits.device)

    def accept(self, token_id: int) -> None:
        if not self.matcher.accept_token(int(token_id)):
            raise RuntimeError(f"grammar rejected token {token_id} it had allowed")

    @property
    def finished(self) -> bool:
        return self.matcher.is_terminated()
