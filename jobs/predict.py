"""`varith predict --model PATH.pth [QUESTION...]`: greedy-decode the n+2 answer tokens, print them as predicted.

Questions on standard input are answered batch by batch as they arrive (one output line per input line; a blank
line gives a blank line), so the first answers come at once and memory stays bounded on any input length.
"""

from __future__ import annotations

import argparse
import sys

HELP = "greedy-decode answers for questions like 012345+678901 (one per line on stdin when none are given)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        metavar="PATH.pth",
        help="weights <name>.pth, or a bare model name fetched with varith fetch (found in $VARITH_CACHE, default "
        "~/.cache/verified-arithmetic/<name>/); the shape comes from <name>_train.json beside it, else from the "
        "name and the weights' own tensor shapes",
    )
    p.add_argument(
        "questions",
        nargs="*",
        metavar="QUESTION",
        help="questions like 012345+678901, 12-345 or 12*34 (ASCII digits; an '=...' tail is ignored); read one "
        "per line from standard input when none are given, where a blank line gives a blank output line",
    )
    p.add_argument(
        "--device",
        default="auto",
        metavar="DEVICE",
        help="one of: auto (cuda when present, else cpu), cpu, cuda, cuda:<i> (default auto)",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="print the whole sequence question=answer instead of the answer alone",
    )


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from arith.decode import greedy_answers
    from arith.device import choose_device
    from arith.vocab import Layout, answer_stream, encode, tokens_to_strings, untrained_op_warnings
    from arith.weights import load_model, model_info, trained_ops
    from jobs.stages.hub import model_weights

    weights = model_weights(args.model)  # a file, or a model name fetched into the cache (varith fetch NAME)
    name = weights.name[: -len(".pth")] if weights.name.endswith(".pth") else weights.stem
    shape, n_digits, config = model_info(weights)
    trained = trained_ops(config, name)
    layout = Layout(n_digits)
    model = load_model(weights, shape, choose_device(args.device))  # once, before any input is read
    warned: set[int] = set()

    def answer(x: np.ndarray, y: np.ndarray, op: np.ndarray) -> list[str]:
        for o, warning in untrained_op_warnings(x, y, op, trained, name):
            if o not in warned:
                print(f"varith predict: warning: {warning}", file=sys.stderr, flush=True)
                warned.add(o)
        prompts = torch.from_numpy(encode(x, y, op)[:, : layout.n_question])
        answers = greedy_answers(model, prompts, layout)
        out = answers if not args.full else np.concatenate([prompts.numpy(), answers], axis=1)
        return tokens_to_strings(out)

    answer_stream(args.questions, n_digits, answer)
    return 0
