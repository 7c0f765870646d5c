"""`varith predict --model PATH.pth [QUESTION...]`: greedy-decode the n+2 answer tokens, print them as predicted."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from arith.decode import greedy_answers
from arith.device import choose_device
from arith.vocab import Layout, encode, parse_questions, tokens_to_strings
from arith.weights import load_model, model_info

HELP = "greedy-decode answers for questions like 012345+678901 (one per line on stdin when none are given)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="weights <name>.pth (shape from <name>_train.json or the name)")
    p.add_argument("questions", nargs="*", help="questions; read one per line from stdin when none are given")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda[:i]")
    p.add_argument("--full", action="store_true", help="print the whole sequence question=answer")


def read_questions(args_questions: list[str]) -> list[str]:
    lines = args_questions or [line for line in sys.stdin.read().splitlines()]
    return [q for q in lines if q.strip()]


def run(args: argparse.Namespace) -> int:
    shape, n_digits, _config = model_info(args.model)
    x, y, op = parse_questions(read_questions(args.questions), n_digits)
    model = load_model(args.model, shape, choose_device(args.device))
    layout = Layout(n_digits)
    prompts = torch.from_numpy(encode(x, y, op)[:, : layout.n_question])
    answers = greedy_answers(model, prompts, layout)
    out = answers if not args.full else np.concatenate([prompts.numpy(), answers], axis=1)
    for line in tokens_to_strings(out):
        print(line)
    return 0
