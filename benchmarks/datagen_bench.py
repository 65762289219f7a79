"""Benchmark: KeyChain generation speed against one tokenisation of its own output.

For each length it prints samples/s and prompt tokens/s of generation, the time tiktoken takes to
tokenise the same rendered prompts once (measured in the same run, on the same machine), and the
ratio of the two. Generation includes counting documents (cached per document), filling, inserting
the chains, rendering the chat template and the one final measurement of each prompt, so a ratio of
1.0 would mean generation costs exactly one tokenisation of its output.

"cold" starts a fresh generator (every document it meets is tokenised for the first time);
"warm" continues with the same generator (document counts cached), the steady state of a long run.

    python benchmarks/datagen_bench.py                        # synthetic source, 20k and 60k
    python benchmarks/datagen_bench.py --num-samples 100 --lengths 20k,40k,60k
    python benchmarks/datagen_bench.py --source hotpotqa --input hotpot_dev_distractor_v1.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter

from datagen.corpus import Corpus
from datagen.generators import GENERATORS
from datagen.lengths import format_length, parse_lengths
from datagen.sources import get_source
from datagen.tokenizers import get_tokenizer


def bench(corpus: Corpus, length: int, n: int, tokenizer: str, start: int = 0, gen=None):
    """Generate ``n`` samples and tokenise each rendered prompt right after it is made.

    Interleaving the two measurements exposes both to the same machine load (shared machines are noisy).
    """
    cfg = GENERATORS.get("keychain").config_cls(length=length, seed=0, tokenizer=tokenizer)
    gen = gen or GENERATORS.get("keychain")(cfg, corpus)
    tok = get_tokenizer(tokenizer)
    t_gen = t_tok = 0.0
    total = 0
    for i in range(start, start + n):
        t0 = time.perf_counter()
        sample = gen.sample(i, Counter())
        t1 = time.perf_counter()
        rendered = tok.render(sample.prompt)
        t2 = time.perf_counter()
        count = len(tok.encoding.encode(rendered, allowed_special="all"))
        t3 = time.perf_counter()
        assert count == sample.prompt_tokens
        t_gen += t1 - t0
        t_tok += t3 - t2
        total += count
    return gen, t_gen, t_tok, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="synthetic")
    ap.add_argument("--input", default=None)
    ap.add_argument("--lengths", default="20k,60k")
    ap.add_argument("--num-samples", type=int, default=50)
    ap.add_argument("--tokenizer", default="qwen2.5")
    ap.add_argument("--repeats", type=int, default=3, help="warm repeats; the median ratio is reported")
    args = ap.parse_args()

    t0 = time.perf_counter()
    corpus = Corpus.from_source(get_source(args.source, args.input))
    print(f"source {args.source}: {len(corpus)} triplets, {len(corpus.docs)} documents "
          f"(loaded in {time.perf_counter() - t0:.1f}s); tokenizer {args.tokenizer}; {args.num_samples} samples per row")
    header = (f"{'length':>7} {'cache':>5} {'samples/s':>10} {'tokens/s':>11} {'gen s':>7} {'tokenize s':>10} "
              f"{'gen/tokenize':>12} {'docs counted':>12}")
    print(header)
    print("-" * len(header))
    for length in parse_lengths(args.lengths):
        gen = None
        runs = [("cold", 0)] + [("warm", args.num_samples * (r + 1)) for r in range(args.repeats)]
        warm_ratios = []
        for label, start in runs:
            before = gen.counter.counted if gen else 0
            gen, t_gen, t_tok, total = bench(corpus, length, args.num_samples, args.tokenizer, start, gen)
            if label == "warm":
                warm_ratios.append(t_gen / t_tok)
            print(f"{format_length(length):>7} {label:>5} {args.num_samples / t_gen:>10.1f} {total / t_gen:>11,.0f} "
                  f"{t_gen:>7.2f} {t_tok:>10.2f} {t_gen / t_tok:>12.2f} {gen.counter.counted - before:>12}")
        print(f"{format_length(length):>7} median warm gen/tokenize ratio: {statistics.median(warm_ratios):.2f}")


if __name__ == "__main__":
    main()
