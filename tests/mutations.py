"""Break each of the README's promises on purpose, one at a time, and check that a test catches it.

Each mutation replaces one piece of source text by a broken version in a temporary copy of the tree (the
files git tracks or would track), runs the tests that should catch it there, and restores the file. A
mutation is *caught* when those tests fail (pytest exit 1), *MISSED* when they pass, *n/a* when its source
text is no longer in the tree (the code changed: update the mutation), and *error* on any other exit (a
collection error says nothing about the feature). The tests are first run unmutated (``--no-baseline``
skips that): a failing baseline makes a "caught" meaningless, and is reported as such.

Usage::

    python tests/mutations.py                   # every fast mutation (about 15 minutes on 2 cores)
    python tests/mutations.py --slow            # also those caught only by slow end-to-end tests
    python tests/mutations.py --only heldout    # mutations whose name contains "heldout"
    python tests/mutations.py --list            # names, promises and tests, without running anything

Exit status 1 when any mutation is missed (or errors, or its baseline fails).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    """One deliberate break: ``old`` becomes ``new`` in ``path``; ``tests`` (pytest arguments) must catch it."""

    name: str
    promise: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    slow: bool = False


_BUILD = "curriculum/build.py"
_VERIFY = "datagen/verify.py"
_PLAN = "train/plan.py"
_TEST_BUILD = "tests/curriculum/test_build.py"
_TEST_VERIFY = "tests/datagen/test_verify.py"
_TEST_PLAN = ("tests/train/test_plan.py",)
_BENCH = "benchmarks/learning_curve.py"
_TEST_LEARNING = "tests/test_learning.py"

MUTATIONS: list[Mutation] = [
    # -- exact length ------------------------------------------------------------------------------
    Mutation(
        "length/fit-overshoots",
        "every sample lands in [0.99 L, L] tokens",
        "datagen/generators/fit.py",
        "budget = length - fixed - pair_total",
        "budget = length - fixed - pair_total + 8",
        ("tests/datagen/test_fit.py", "tests/datagen/test_generators.py"),
    ),
    Mutation(
        "length/verify-accepts-over-budget",
        "verify re-measures every length against [L(1-tol), L]",
        _VERIFY,
        "if not lo <= measured <= length:",
        "if not lo <= measured <= length + 1000:",
        (_TEST_VERIFY, "-k", "inserted_after_measuring"),
    ),
    Mutation(
        "length/verify-trusts-stored-count",
        "verify re-measures every length, not the stored count",
        _VERIFY,
        'if measured != row["prompt_tokens"]:',
        "if False:",
        (_TEST_VERIFY, "-k", "wrong_stored_length"),
    ),
    # -- held-out exclusion ------------------------------------------------------------------------
    Mutation(
        "heldout/no-paraphrase-closure",
        "a held-out fact asked in other words under another id is held out too",
        _BUILD,
        "by_fact = np.array([bool(f) and f in held_sets for f in facts], dtype=bool) & ~held & ~by_q",
        "by_fact = np.zeros(len(q), dtype=bool)",
        (_TEST_BUILD, "-k", "no_held_out_fact"),
    ),
    Mutation(
        "heldout/no-same-text-closure",
        "a held-out question under another source id is held out too",
        _BUILD,
        "by_q = np.array([x in held_q for x in q], dtype=bool) & ~held",
        "by_q = np.zeros(len(q), dtype=bool)",
        (_TEST_BUILD, "-k", "another_source_id"),
    ),
    Mutation(
        "heldout/trains-through-held-fact",
        "no training question goes through a held-out question's fact",
        _BUILD,
        "uses_fact = np.array([bool(f & held_facts) for f in facts], dtype=bool) & ~held",
        "uses_fact = np.zeros(len(q), dtype=bool)",
        (_TEST_BUILD, "-k", "no_held_out_fact"),
    ),
    Mutation(
        "heldout/decoy-by-text-only",
        "a decoy chain asking a held-out question in other words is dropped",
        _BUILD,
        'return normalize_question(chain["target"]) in held_q or (bool(keys) and keys in held_sets)',
        'return normalize_question(chain["target"]) in held_q',
        (_TEST_BUILD, "-k", "decoy"),
    ),
    Mutation(
        "heldout/decoy-by-facts-only",
        "a decoy chain naming a held-out question is dropped",
        _BUILD,
        'return normalize_question(chain["target"]) in held_q or (bool(keys) and keys in held_sets)',
        "return bool(keys) and keys in held_sets",
        (_TEST_BUILD, "-k", "decoy"),
    ),
    Mutation(
        "heldout/sft-ignores-facts",
        "no SFT target asks, answers or cites a held-out fact",
        "train/sft.py",
        "and not facts.intersection(t.fact_keys or ())",
        "",
        (_TEST_BUILD, "-k", "warm_up or no_held_out_fact"),
    ),
    Mutation(
        "heldout/sft-ignores-ids",
        "train sft --heldout leaves the held-out triplets out",
        "train/sft.py",
        "if t.id not in ids\n",
        "if True\n",
        (_TEST_BUILD, "-k", "warm_up"),
    ),
    Mutation(
        "heldout/dvc-sft-without-heldout",
        "the DVC pipeline passes the held-out file from curriculum to sft",
        "dvc.yaml",
        "--heldout data/heldout.json",
        "",
        (_TEST_BUILD, "-k", "dvc_passes"),
    ),
    Mutation(
        "heldout/benchmark-sft-without-heldout",
        "the learning benchmark's SFT trains on the training split only",
        _BENCH,
        ', "--heldout", str(work / "heldout.json")]',
        "]",
        (_TEST_LEARNING, "-k", "tiny_learning"),
        slow=True,
    ),
    # -- a judge failure never inflates a figure ---------------------------------------------------
    Mutation(
        "judge/train-failure-rewarded",
        "a failed judge call is an unknown reward (None), never a score",
        "train/rewards.py",
        "rewards[i] = None  # unknown: TRL gives it no advantage; never a silent 0",
        "rewards[i] = 1.0",
        ("tests/train/test_rewards.py",),
    ),
    Mutation(
        "judge/eval-failure-counted-yes",
        "in evaluation a failed judge call keeps the rule score",
        "eval/scoring.py",
        'c["judge"] = r["em"] if jv is None else jv',
        'c["judge"] = 1.0 if jv is None else jv',
        ("tests/eval/test_scoring.py",),
    ),
    Mutation(
        "judge/garbage-is-a-no",
        "a judge reply that is neither YES nor NO is a failure, never a verdict",
        "eval/judge.py",
        "                verdict = parse_verdict(reply)\n",
        "                verdict = parse_verdict(reply)\n                verdict = False if verdict is None else verdict\n",
        ("tests/eval/test_judge.py",),
    ),
    Mutation(
        "reward/one-module-bracketed-verdict",
        "eval, the TRL reward and verl's copy read the judge alike, QwenLong-L1's [[YES]] included",
        "eval/reward.py",
        "    if bracketed:\n        return",
        "    if False:\n        return",
        ("tests/train/test_reward_table.py",),
    ),
    # -- resume refusal ----------------------------------------------------------------------------
    Mutation(
        "resume/model-fingerprint-ignored",
        "a model retrained into the same folder does not pass for the old one",
        "eval/run.py",
        'ident["model_files"] = model_fingerprint(self.model)',
        'ident["model_files"] = None',
        ("tests/eval/test_resume.py",),
    ),
    Mutation(
        "resume/settings-ignored",
        "a resume with other settings is refused",
        "eval/run.py",
        '    if diffs:\n        return f"{path} was generated with other settings',
        '    if False:\n        return f"{path} was generated with other settings',
        ("tests/eval/test_resume.py",),
    ),
    Mutation(
        "resume/prompts-ignored",
        "a resume over changed prompts is refused",
        "eval/run.py",
        '    if changed:\n        return (\n            f"{path} answers other prompts',
        '    if False:\n        return (\n            f"{path} answers other prompts',
        ("tests/eval/test_resume.py",),
    ),
    Mutation(
        "resume/old-openai-meta-refused",
        "a run recorded before the options moved into the backends resumes",
        "eval/run.py",
        "if before.get(k) != ident.get(k) and k not in inert",
        "if before.get(k) != ident.get(k)",
        ("tests/eval/test_resume.py", "-k", "options_moved"),
    ),
    # -- one generation spec -----------------------------------------------------------------------
    Mutation(
        "spec/teacher-options-dropped",
        "the SFT teacher's backend options reach its backend",
        "train/sft.py",
        "backend_option=list(config.teacher_backend_option),",
        "backend_option=[],",
        ("tests/train/test_judge_spec.py", "-k", "teacher_options"),
    ),
    Mutation(
        "spec/backend-option-last-flag-wins",
        "every --backend-option flag counts (DVC writes one per list item)",
        "eval/run.py",
        "    backend_option: list[str] = field(default_factory=list)\n",
        '    backend_option: list[str] = field(default_factory=list, metadata={"parse": split_option_items})\n',
        ("tests/test_params.py", "-k", "dvc_writes"),
    ),
    # -- verify catches each tamper ----------------------------------------------------------------
    Mutation(
        "verify/answer-not-in-gold",
        "verify finds every long-QA and KeyChain answer in its gold documents",
        _VERIFY,
        'if answer_support(row) == "missing":',
        "if False:",
        (_TEST_VERIFY, "-k", "gold_documents_do_not_contain"),
    ),
    Mutation(
        "verify/yes-no-fails",
        "yes/no answers are counted, not failed",
        _VERIFY,
        'if answers and all(a.strip() in ("yes", "no") for a in answers):',
        "if False:",
        (_TEST_VERIFY, "-k", "yes_no"),
    ),
    Mutation(
        "verify/gold-document-missing",
        "verify checks the gold documents are in the prompt",
        _VERIFY,
        '        if g["text"] not in clean:',
        "        if False:",
        (_TEST_VERIFY, "-k", "missing_gold_document"),
    ),
    Mutation(
        "verify/answer-copies-differ",
        "verify checks the reward's copies of the answers",
        _VERIFY,
        "if truth != answers:",
        "if False:",
        (_TEST_VERIFY, "-k", "answers_must_agree"),
    ),
    Mutation(
        "verify/chain-end-unchecked",
        "verify re-derives every chain and checks it ends at the question",
        "datagen/generators/keychain.py",
        'if end != row["question"]:',
        "if False:",
        (_TEST_VERIFY, "-k", "broken_chain"),
    ),
    Mutation(
        "verify/duplicate-uid",
        "verify refuses a uid used twice",
        _VERIFY,
        "    if uid in uids:",
        "    if False:",
        (_TEST_VERIFY, "-k", "duplicate_uid"),
    ),
    # -- dynamic sampling --------------------------------------------------------------------------
    Mutation(
        "dapo/groups-not-filtered",
        "groups whose rewards are all equal are replaced (DAPO's dynamic sampling)",
        "train/dapo.py",
        "return (known.sum(dim=1) < 2) | ((hi - lo).abs() < 1e-6)",
        "return known.sum(dim=1) < 2",
        ("tests/train/test_dapo.py",),
    ),
    # -- the planner's terms (train/plan.py) -------------------------------------------------------
    Mutation(
        "plan/checkpoints-halved",
        "train plan counts each layer's bf16 checkpoint",
        _PLAN,
        "checkpoints = 0.0 if s.activation_offload else L * b * T * h * a\n",
        "checkpoints = 0.0 if s.activation_offload else L * b * T * h * a / 2\n",
        _TEST_PLAN,
    ),
    Mutation(
        "plan/no-recompute",
        "train plan counts one layer's recomputed working set",
        _PLAN,
        "    recompute = layer\n",
        "    recompute = 0.0\n",
        _TEST_PLAN,
    ),
    Mutation(
        "plan/lm-head-gradient-bf16",
        "train plan counts the fp32 gradient of the LM head",
        _PLAN,
        "head_grads = (N + V) * h * 4",
        "head_grads = (N + V) * h * 2",
        _TEST_PLAN,
    ),
    Mutation(
        "plan/zero3-optimizer-unsharded",
        "train plan shards AdamW's states under ZeRO-3",
        _PLAN,
        '"zero3": (w * n / g, w * n / g, opt / g),',
        '"zero3": (w * n / g, w * n / g, opt),',
        _TEST_PLAN,
    ),
    Mutation(
        "plan/no-sdpa-mask",
        "train plan counts SDPA's boolean mask for padded batches",
        _PLAN,
        "    attention = b * T * T if padded_sdpa else 0.0\n",
        "    attention = 0.0\n",
        _TEST_PLAN,
    ),
    Mutation(
        "plan/own-defaults",
        "every route into the plan takes train grpo's defaults for what a config leaves out",
        _PLAN,
        "    v = {**training_defaults(), **{",
        '    v = {**training_defaults(), "gradient_checkpointing": False, **{',
        _TEST_PLAN,
    ),
    Mutation(
        "plan/no-reference-model",
        "train plan counts the reference model's weights when beta > 0",
        _PLAN,
        "        ref = a * n / (s.num_gpus if s.sharding in",
        "        ref = 0 * n / (s.num_gpus if s.sharding in",
        _TEST_PLAN,
    ),
    # -- the learning benchmark's resume, parallel steps and training signals ----------------------
    Mutation(
        "resume/benchmark-never-reuses",
        "learning_curve run --resume reuses the steps made with the same commands on the same data",
        _BENCH,
        'return self.record.get(key, {}).get("identity") == self.steps[key]["identity"]',
        "return False",
        (_TEST_LEARNING, "-k", "resume_runs_what_changed"),
    ),
    Mutation(
        "resume/benchmark-digest-unchecked",
        "learning_curve run --resume stops when data made again differs from the recorded digest",
        _BENCH,
        'if self.made(key) and before.get("digest") not in (None, digest):',
        "if False:",
        (_TEST_LEARNING, "-k", "resume_runs_what_changed"),
    ),
    Mutation(
        "resume/benchmark-evaluates-without-its-model",
        "learning_curve run --resume trains the model a changed evaluation needs when pack left none",
        _BENCH,
        'needed.update(s["deps"])',
        "pass",
        (_TEST_LEARNING, "-k", "resume_runs_what_changed"),
    ),
    Mutation(
        "lock/benchmark-run-unlocked",
        "a second learning_curve run into a WORK folder another command is writing fails at once",
        _BENCH,
        "    work = work.resolve()\n    lock(work)\n",
        "    work = work.resolve()\n",
        (_TEST_LEARNING, "-k", "refuse_a_folder"),
    ),
    Mutation(
        "jobs/benchmark-ignores-deps",
        "learning_curve run --jobs starts a step only after the steps it reads from ended",
        _BENCH,
        'if not any(d in todo or d in running.values() for d in self.steps[k]["deps"])',
        "if True",
        (_TEST_LEARNING, "-k", "jobs"),
        slow=True,
    ),
    Mutation(
        "resume/benchmark-interpreter-in-checkout",
        "a learning run resumes in a checkout whose interpreter lives elsewhere (a .venv inside or not)",
        _BENCH,
        'subs = [(sys.executable, "{PYTHON}"), (str(self.work), "{WORK}"), (str(ROOT), "{ROOT}")]',
        'subs = [(str(self.work), "{WORK}"), (str(ROOT), "{ROOT}"), (sys.executable, "{PYTHON}")]',
        (_TEST_LEARNING, "-k", "interpreter"),
    ),
    Mutation(
        "signals/benchmark-empty-is-zero",
        "the learning report averages a training signal over the logs that carry it",
        _BENCH,
        'vals = [float(r[key]) for r in rows if r.get(key) not in (None, "")]',
        "vals = [float(r[key] or 0) for r in rows]",
        (_TEST_LEARNING, "-k", "seeds_are_averaged"),
    ),
]


def copy_tree(dst: Path) -> None:
    """The files git tracks or would track (untracked, not ignored), as they are in the working tree."""
    names = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for raw in filter(None, names):
        name = raw.decode()
        src = ROOT / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    # a repository of its own: the learning benchmark records the commit its figures come from
    git = ["git", "-c", "user.name=mutations", "-c", "user.email=mutations@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "the tree under test"]):
        subprocess.run([*git, *cmd], cwd=dst, capture_output=True, check=True)


def pytest(tree: Path, args: tuple[str, ...], timeout: int) -> tuple[int, float]:
    """Run pytest on ``args`` in ``tree`` (its own packages first on the path); exit status and seconds."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    try:
        rc = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args],
            cwd=tree,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        ).returncode
    except subprocess.TimeoutExpired:
        rc = -1
    return rc, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="run the mutations whose name contains this text")
    ap.add_argument("--slow", action="store_true", help="include mutations caught only by slow tests")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--no-baseline", action="store_true", help="do not run the tests unmutated first")
    ap.add_argument("--timeout", type=int, default=1500, help="seconds per pytest run")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.only in m.name and (args.slow or not m.slow)]
    if args.list:
        for m in chosen:
            print(f"{m.name:38} {m.promise}\n{'':38} {m.path}; tests: {' '.join(m.tests)}")
        return 0
    rows: list[tuple[str, str, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="longmill-mutations-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        baseline: dict[tuple[str, ...], int] = {}
        for m in chosen:
            target = tree / m.path
            original = target.read_text()
            if m.old not in original:
                rows.append((m.name, "n/a", "source text not found: update the mutation", 0.0))
                continue
            if not args.no_baseline and m.tests not in baseline:
                baseline[m.tests] = pytest(tree, m.tests, args.timeout)[0]
            if baseline.get(m.tests, 0) != 0:
                rows.append((m.name, "error", f"the tests fail unmutated (exit {baseline[m.tests]})", 0.0))
                continue
            target.write_text(original.replace(m.old, m.new, 1))
            try:
                rc, seconds = pytest(tree, m.tests, args.timeout)
            finally:
                target.write_text(original)
            status = {0: "MISSED", 1: "caught"}.get(rc, "error")
            why = {0: "the tests pass with the feature broken", 1: "", -1: "timed out"}.get(
                rc, f"pytest exit {rc}"
            )
            rows.append((m.name, status, why, seconds))
            print(f"{m.name}: {status} ({seconds:.0f} s) {why}", file=sys.stderr, flush=True)
    width = max(len(r[0]) for r in rows) if rows else 10
    print(f"| {'mutation':{width}} | result | seconds | note |")
    print(f"|{'-' * (width + 2)}|--------|---------|------|")
    for name, status, why, seconds in rows:
        print(f"| {name:{width}} | {status:6} | {seconds:7.0f} | {why} |")
    caught = sum(r[1] == "caught" for r in rows)
    print(f"\n{caught} of {len(rows)} mutations caught")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
