"""``interestgym export``: a trained run's policy -> ONNX + manifest for the runtime.

Heavy imports (torch, stable-baselines3) happen inside the command, so ``--help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Export directory to write (replaced atomically if it holds a previous export).")
@click.option("--model", "which_model", type=click.Choice(["shipped", "best", "final"]), default="shipped", show_default=True,
              help="What to export: the policy the run ships (its learned model, or its reference rule when the model "
                   "was not proven better on validation: see RUN/shipped.json), or a saved model.")
@click.option("--verify-observations", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Check the ONNX actions against SB3's on this many recorded observations before writing (0: skip).")
@click.option("--verify-split", type=click.Choice(["test", "valid", "train"]), default="test", show_default=True,
              help="Users whose replayed decisions give the verification observations.")
def export(run_dir: Path, out: Path, which_model: str, verify_observations: int, verify_split: str) -> None:
    """Export RUN_DIR's trained policy to ONNX + manifest (for `interestgym.runtime`).

    \b
    Writes into OUT:
      policy.onnx      raw observation -> action (a residual run: the change to its reference rule);
                       normalisation and clipping baked in; absent when the run ships its rule
      manifest.json    format version, features, action / update / scoring formulas and parameters,
                       encoder (name, dim, fingerprint), dataset and run, evaluation metrics,
                       sha256 of every file
      item_ids.json, popularity.npy, categories.json   what the score needs besides the graph
    Serve it with numpy + onnxruntime only:
      from interestgym.runtime import load_policy
      policy = load_policy("OUT")
    A sequence tracker's run folder (`interestgym train-sequence`) exports as tracker.onnx + items.npy +
    item_ids.json + tracker.json, served by `interestgym.runtime.tracker` (see docs/sequence.md).
    Example:
      interestgym export runs/syn --out runs/syn/export
    """
    from interestgym.agents.sequence.folder import is_sequence_run

    before = _previous_digest(out)
    if is_sequence_run(run_dir):
        _export_tracker(run_dir, out, "best" if which_model == "shipped" else which_model, verify_observations)
        _note_replaced(out, before)
        return
    from interestgym.export.run import export_run

    result = export_run(run_dir, out, which=which_model, verify_observations=verify_observations, verify_split=verify_split)
    _note_replaced(out, before)
    m = result.manifest
    policy = m["policy"]
    what = (f"reference rule {policy['rule']['name']}" if policy["form"] == "rule" else
            f"{m['provenance']['run']['model']} model ({policy['form']}" + (f" on {policy['rule']['name']})" if policy["form"] == "residual" else ")"))
    click.echo(f"exported the {what} of {run_dir} to {result.out}")
    shipped = m["provenance"]["run"].get("shipped")
    if shipped:
        click.echo(f"  shipped because: {shipped['reason']}")
    click.echo(f"  encoder {m['encoder']['name']} (dim {m['encoder']['dim']}, fingerprint {str(m['encoder']['fingerprint'])[:12]}...)")
    if policy["form"] != "rule":
        click.echo(f"  verified on {result.n_verified} {verify_split} observations: max |ONNX - SB3| = {result.max_abs_action_diff:.2e}"
                   if result.n_verified else "  not verified (--verify-observations 0): the graph was not compared with SB3")
    for name, entry in m["files"].items():
        click.echo(f"  {name:<16} {entry['bytes']:>10,} bytes  sha256 {entry['sha256'][:16]}...")
    tracker = m.get("tracker")
    if tracker:
        click.echo(f"  {tracker['folder'] + '/':<16} the sequence tracker the score weighs (weight {tracker['weight']:g}; "
                   f"tracker.json sha256 {tracker['manifest_sha256'][:16]}...): events need item_id")
    extra = m["observation"].get("extra") or []
    if extra and policy["form"] != "rule":
        click.echo(f"  observes, after the {len(m['observation']['features']) - len(extra)} features: {', '.join(extra)}")
    if result.dataset_note is not None:
        click.echo(f"  note: {result.dataset_note}")
    if result.evaluation_note is not None:
        click.echo(f"  note: {result.evaluation_note}")
    elif m.get("evaluation") is None:
        click.echo(f"  (no evaluation.json in the run: run `interestgym evaluate {run_dir}` first to record metrics in the manifest)")
    else:
        header = (m["evaluation"].get("results") or {}).get("header") or {}
        click.echo(f"  metrics from {m['evaluation']['source']}: split {header.get('split', 'test')}, {header.get('users', '?')} users, "
                   f"compared with {header.get('reference', '?')}")


def _previous_digest(out: Path) -> tuple[str, str] | None:
    """What identifies the export ``out`` holds now: ("manifest sha256", its content digest) for a policy export,
    ("tracker.json sha256", the file's) for a tracker export; None when ``out`` holds neither (or one unreadable)."""
    import json

    from interestgym.io import sha256_file

    try:
        return "manifest sha256", str(json.loads((out / "manifest.json").read_text(encoding="utf-8"))["manifest_sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return "tracker.json sha256", sha256_file(out / "tracker.json")
    except OSError:
        return None


def _note_replaced(out: Path, before: tuple[str, str] | None) -> None:
    """Say that an earlier export in ``out`` was replaced (one being served keeps serving the old policy)."""
    if before is None:
        return
    label, old = before
    after = _previous_digest(out)
    new = after[1] if after is not None and after[0] == label else None
    same = " (the same content)" if new == old else (f", now {new[:16]}..." if new else "")
    click.echo(f"  replaced the export that was in {out} ({label} {old[:16]}...{same}); a server already serving it keeps "
               f"the policy it loaded until `POST /v1/admin/policy {{\"path\": \"{out}\"}}` or a restart", err=True)


def _export_tracker(run_dir: Path, out: Path, which: str, verify: int) -> None:
    from interestgym.export.tracker import export_tracker

    result = export_tracker(run_dir, out, which=which, verify_windows=verify)
    m = result.manifest
    click.echo(f"exported the {m['model']['model']} tracker ({which} weights, window {m['window']}, hidden {m['hidden']}) "
               f"of {run_dir} to {result.out}")
    windows = m["verification"]["windows"]
    click.echo(f"  verified on {windows} random windows: max |ONNX - torch| state = {result.max_abs_state_diff:.2e}" if windows else
               "  not verified (--verify-observations 0): the graph was not compared with the torch tracker")
    for name, entry in m["files"].items():
        click.echo(f"  {name:<16} {entry['bytes']:>10,} bytes  sha256 {entry['sha256'][:16]}...")
