"""``interestgym prepare``: raw logs -> a validated, split, canonical dataset directory."""

from __future__ import annotations

import difflib
import json
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from interestgym.data.swap import STAGE_FOLDERS, check_out, is_dataset_file, recover
from interestgym.errors import DataError, InterestGymError

FORMATS = ("mind", "movielens", "events", "synthetic")

#: Which options belong to which format; options not listed are common to the readers.
_FORMAT_OPTIONS: dict[str, tuple[str, ...]] = {
    "mind": ("mind_text", "mind_parts"),
    "movielens": ("tags", "max_tags"),
    "events": ("input_format", "delimiter", "columns", "header", "rename", "actions", "default_action", "time_format", "items_path",
               "items_columns", "item_text", "context", "reader"),
    "synthetic": ("users", "seed", "lang", "drift", "events_per_user"),
}
_NOT_FOR_SYNTHETIC = ("max_reject_rate", "tz_offset")


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def _option_flag(ctx: click.Context, name: str) -> str:
    for param in ctx.command.params:
        if param.name == name and isinstance(param, click.Option):
            return max(param.opts, key=len)
    return name


def _command_line(ctx: click.Context) -> list[str]:
    """The command as run: the arguments and the options given (defaults left out), for the manifest."""
    argv = ["interestgym", "prepare"]
    for param in ctx.command.params:
        name = param.name
        assert name is not None
        value = ctx.params.get(name)
        if isinstance(param, click.Argument):
            if value is not None:
                argv.append(str(value))
            continue
        if not _given(ctx, name) and name != "out":
            continue
        if isinstance(param, click.Option) and param.is_flag:
            if param.secondary_opts:
                argv.append(max(param.opts, key=len) if value else max(param.secondary_opts, key=len))
            elif value:
                argv.append(max(param.opts, key=len))
            continue
        argv += [max(param.opts, key=len), str(value)]
    return argv


def _parse_split(text: str) -> tuple[float, float, float]:
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise DataError(f"--split {text!r}: expected three fractions TRAIN,VALID,TEST such as 0.6,0.2,0.2")
    return values  # type: ignore[return-value]


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse to mix a new dataset with other files; a dataset is replaced only with ``overwrite``.

    Nothing is removed here: the new dataset is built beside ``out`` and swapped in when complete
    (:func:`interestgym.data.swap.replacing_dir`), keeping ``embeddings/``, ``cache/`` and any
    other entry that is not a file of the old dataset. So a failed or killed run leaves the old
    dataset as it was.
    """
    check_out(out)  # before the (long) reading: a folder that cannot be swapped is refused now
    for note in recover(out):  # a leftover of a killed run must not block this one
        click.echo(f"note: {note}", err=True)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: is a file; expected a folder for the dataset")
    if not out.exists() or not any(out.iterdir()):
        return
    is_dataset = (out / "manifest.json").is_file()
    # Only dataset files (and encode's folders) but no manifest: the remains of a prepare killed by
    # an interestgym that wrote in place. Replaceable like a dataset.
    incomplete = not is_dataset and all(is_dataset_file(p) or (p.name in STAGE_FOLDERS and p.is_dir()) for p in out.iterdir())
    if not overwrite:
        what = "holds a dataset" if is_dataset else "holds an incomplete dataset (no manifest.json)" if incomplete else "is not empty"
        raise DataError(f"--out {out}: {what}; choose another folder" + (" or pass --overwrite" if is_dataset or incomplete else ""))
    if not is_dataset and not incomplete:
        raise DataError(f"--out {out}: is not empty and holds no dataset (no manifest.json); refusing to write into it")


def _summary(manifest: dict[str, Any], out: Path, fmt: str) -> str:
    counts = manifest["counts"]
    split = manifest["split"]
    validation = manifest["validation"]
    actions = ", ".join(f"{k} {v:,}" for k, v in counts.get("actions", {}).items())
    variant = manifest.get("reader", {}).get("variant")
    lines = [
        f"Prepared {fmt}{f' ({variant})' if variant else ''} -> {out}",
        f"  events       {counts['events']:>10,}  ({actions})",
        f"  users        {counts['users']:>10,}  (train {split['users']['train']:,} / valid {split['users']['valid']:,} / "
        f"test {split['users']['test']:,}; split seed {split['seed']}"
        + (f", time split {split['time_fraction']}" if split.get("time_fraction") is not None else "") + ")",
        f"  items        {counts['items']:>10,}",
    ]
    if counts.get("impressions"):
        lines.append(f"  impressions  {counts['impressions']:>10,}")
    if counts.get("repeat_engagements"):
        lines.append(f"  repeats      {counts['repeat_engagements']:>10,}  (engagements of an item the same user engaged with "
                     "before: next-positive evaluation may draw a user's own past items as negatives, `exclude target`)")
    lines.append(f"  rejected     {validation['rejected_total']:>10,}  (details: {out / 'rejects.jsonl'})")
    for name, st in validation["files"].items():
        reasons = "; ".join(f"{k} {v:,}" for k, v in st["reject_reasons"].items())
        lines.append(f"    {name}: {st['rows_read']:,} rows read, {st['kept']:,} kept, {st['rejected']:,} rejected, "
                     f"{st['blank']:,} blank, {st['duplicate']:,} duplicate" + (f" ({reasons})" if reasons else ""))
    for note in validation.get("notes", []):
        lines.append(f"  note: {note}")
    empty = [name for name in ("train", "valid", "test") if not split["users"].get(name)]
    if empty:
        lines.append(f"  note: no {' / '.join(empty)} users: `train` needs training and validation users and `evaluate` "
                     "test users; prepare a log with more users, or change --split")
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    lines.append(f"Wrote {out}: {', '.join(files)}")
    lines.append(_next_step(out, fmt))
    return "\n".join(lines)


def _delimiter(text: str | None) -> str | None:
    """``--delimiter`` as given: ``\\t`` (or ``tab``) for a tab, checked by :func:`~interestgym.data.tables.check_delimiter`."""
    if text is None:
        return None
    from interestgym.data.tables import check_delimiter

    value = "\t" if text in ("\\t", "tab") else text
    check_delimiter(value)
    return value


def _with_rejects_file(error: DataError, out: Path) -> DataError:
    """A refused input's error, with every rejected row written beside ``out`` (``OUT.rejects.jsonl``, as the
    dataset's own rejects.jsonl would hold them: ``out`` itself may hold an older dataset) and the path named."""
    rejects = getattr(error, "rejects", None)
    if not rejects:
        return error
    from interestgym.io import write_text_atomic

    path = refused_rows_path(out)
    kinds = Counter(r.get("kind", "rejected") for r in rejects)
    listed = ", ".join(f"{n:,} {kind}" for kind, n in sorted(kinds.items()))
    files = Counter(str(r.get("file", "")) for r in rejects)  # as the rows name their file (two log.csv in two folders: two)
    if len(files) > 1:  # an items file's bad rows and the events of its rejected items: which are whose
        listed += ": " + ", ".join(f"{n:,} in {f}" for f, n in files.most_common())
    text = str(error).rstrip()
    text += "" if text.endswith(".") else "."
    if not out.parent.is_dir():
        return DataError(f"{text} (the bad rows were not written: {out.parent} does not exist)")
    try:
        write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects))
    except OSError as exc:  # the refusal is the news: never hide it behind a failed write
        return DataError(f"{text} (the bad rows could not be written to {path}: {exc.strerror or exc})")
    return DataError(f"{text} Every bad row ({listed}), with its file, line and reason: {path}")


def refused_rows_path(out: Path) -> Path:
    """Where a refused prepare writes its bad rows: beside ``out`` (which may hold an older dataset)."""
    return out.parent / f"{out.name}.rejects.jsonl"


def _next_step(out: Path, fmt: str) -> str:
    """The ``encode`` command to run next (:func:`interestgym.data.suggest.encoder_advice`)."""
    from interestgym.data.suggest import encoder_advice

    encoder, why = encoder_advice(out, fmt)
    return f"Next: interestgym encode {shlex.quote(str(out))} --encoder {encoder}" + (f"   # {why}" if why else "")


_HELP = """Turn raw logs into a validated, split, canonical dataset in --out.

\b
FORMAT is one of:
  mind       MIND news logs: INPUT is a folder with behaviors.tsv + news.tsv,
             a folder of parts (train/ dev/), a folder of MIND*.zip, or one zip
             (behaviors.tsv or news.tsv given: its folder, both files, is read)
  movielens  MovieLens ml-100k, ml-1m, ml-10m, ml-latest, ml-20m, ml-25m
             (detected from the files in the INPUT folder or zip)
  events     your own log: INPUT is a CSV, TSV, JSONL or Parquet file
  synthetic  the built-in generator (no INPUT)

Every row is validated; rejected rows go to rejects.jsonl with file, line and
reason, and the command fails when a file has more than --max-reject-rate bad
rows (its bad rows then go to OUT.rejects.jsonl, beside OUT). Options marked [mind], [movielens], [events] or [synthetic] apply to that
format only.

\b
Examples:
  interestgym prepare movielens ml-100k --out runs/data/ml-100k
  interestgym prepare mind MINDsmall --out runs/data/mind --mind-text title+abstract
  interestgym prepare events UserBehavior.csv --out runs/data/taobao \\
      --columns user_id,item_id,category,action,ts \\
      --actions pv=view,cart=add_to_cart,fav=like,buy=purchase \\
      --item-text "category {category}" --tz-offset 8
  interestgym prepare synthetic --out runs/data/synthetic --users 200 --seed 0
"""


@click.command("prepare", help=_HELP, context_settings={"max_content_width": 100})
@click.argument("format_name", metavar="FORMAT")
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Dataset folder to write (created if missing).")
@click.option("--split", "split_text", default="0.6,0.2,0.2", show_default=True, metavar="TRAIN,VALID,TEST",
              help="Fractions of users in the train, valid and test splits.")
@click.option("--split-seed", type=int, default=0, show_default="0; synthetic: --seed", help="Seed of the user split.")
@click.option("--time-split", type=float, default=None, metavar="F",
              help="Also mark each user's events after fraction F of their time span as late (late=True).")
@click.option("--max-reject-rate", type=float, default=0.01, show_default=True, metavar="RATE",
              help="Fail when more than this fraction of a file's rows is rejected.")
@click.option("--tz-offset", type=float, default=0.0, show_default=True, metavar="HOURS",
              help="Hours added to UTC for the hour/weekday columns (ts stays UTC), e.g. 8 for China.")
@click.option("--overwrite", is_flag=True, help="Replace a dataset already in --out (embeddings/ and cache/ are kept).")
@click.option("--mind-text", type=click.Choice(["title", "title+abstract"]), default="title", show_default=True,
              help="[mind] Item text: the title, or 'title | abstract'.")
@click.option("--mind-parts", metavar="NAMES", help="[mind] Parts to read, e.g. train,dev (default: all but test).")
@click.option("--tags/--no-tags", default=True, show_default=True, help="[movielens] Append the movie's tags to its text.")
@click.option("--max-tags", type=int, default=10, show_default=True, help="[movielens] Most tags per movie text.")
@click.option("--input-format", type=click.Choice(["csv", "tsv", "jsonl", "parquet"]), default=None,
              help="[events] File format (default: from the extension, else the content).")
@click.option("--delimiter", metavar="CHAR", default=None,
              help="[events] Field separator of a delimited log (and of an items file whose header holds it), e.g. ';' or '|', "
                   "quotes allowed as in CSV; '\\t' reads the file as TSV (quotes are data there). Default: comma for CSV, tab for TSV.")
@click.option("--columns", metavar="NAMES", help="[events] Names of a headerless file's columns in order; '-' skips one.")
@click.option("--header/--no-header", default=None, help="[events] Whether the file has a header line (default: yes unless --columns).")
@click.option("--map", "rename", metavar="NEW=OLD,...", help="[events] Rename columns, e.g. ts=timestamp,user_id=uid.")
@click.option("--actions", metavar="NAME=ACTION,...", help="[events] Map the log's action names, e.g. pv=view,buy=purchase.")
@click.option("--default-action", metavar="ACTION", help="[events] Action of every row when the log has no action column.")
@click.option("--time-format", default="auto", show_default=True, metavar="FMT",
              help="[events] auto, unix, unix_ms, iso, or a strptime pattern such as '%Y-%m-%d %H:%M:%S'.")
@click.option("--items", "items_path", type=click.Path(path_type=Path), help="[events] Items file: item_id,text[,category,subcategory,...].")
@click.option("--items-columns", metavar="NAMES", help="[events] Names of a headerless items file's columns.")
@click.option("--item-text", metavar="TEMPLATE", help="[events] Build item text from columns, e.g. 'category {category}'.")
@click.option("--context", metavar="NAMES", help="[events] Context columns to keep (default: all non-event columns; '' for none).")
@click.option("--reader", type=click.Choice(["auto", "lines", "columnar"]), default=None,
              help="[events] auto (default): CSV / TSV / Parquet / JSONL checked column-wise; lines: row by row. "
                   "Both give identical datasets and rejects.")
@click.option("--users", type=int, default=None, help="[synthetic] Number of users (default 200).")
@click.option("--seed", type=int, default=None, help="[synthetic] Generator seed (default 0).")
@click.option("--lang", default=None, help="[synthetic] Title language: en or zh (default en).")
@click.option("--drift", default=None, help="[synthetic] Interest dynamics: none, mild or strong (default strong).")
@click.option("--events-per-user", type=int, default=None, help="[synthetic] Mean events per user (default 60).")
@click.pass_context
def prepare(ctx: click.Context, format_name: str, input_path: Path | None, out: Path, split_text: str, split_seed: int,
            time_split: float | None, max_reject_rate: float, tz_offset: float, overwrite: bool, **options: Any) -> None:
    fmt = format_name.lower()
    if fmt not in FORMATS:
        close = difflib.get_close_matches(fmt, FORMATS, n=1)
        raise InterestGymError(f"format {format_name!r}: expected one of {', '.join(FORMATS)}" + (f" (did you mean {close[0]}?)" if close else ""))
    for other, names in _FORMAT_OPTIONS.items():
        if other == fmt:
            continue
        for name in names:
            if _given(ctx, name) and name not in _FORMAT_OPTIONS[fmt]:
                raise InterestGymError(f"{_option_flag(ctx, name)} applies to `prepare {other}` only, not to `prepare {fmt}`")
    if fmt == "synthetic":
        for name in _NOT_FOR_SYNTHETIC:
            if _given(ctx, name):
                raise InterestGymError(f"{_option_flag(ctx, name)} does not apply to `prepare synthetic`")
        if input_path is not None:
            raise InterestGymError(f"prepare synthetic takes no INPUT (found {str(input_path)!r}); use --out DIR and generator options")
    elif input_path is None:
        raise InterestGymError(f"prepare {fmt}: INPUT is missing; expected " + {
            "mind": "a MIND folder or zip", "movielens": "a MovieLens folder or zip", "events": "an events file"}[fmt])
    if not 0.0 <= max_reject_rate <= 1.0:
        raise InterestGymError(f"--max-reject-rate {max_reject_rate:g}: expected a fraction in [0, 1]")

    from interestgym.data.dataset import SplitSpec

    train, valid, test = _parse_split(split_text)
    if fmt == "synthetic" and not _given(ctx, "split_seed") and options["seed"] is not None:
        split_seed = options["seed"]
    split = SplitSpec(train=train, valid=valid, test=test, seed=split_seed, time_fraction=time_split)
    _prepare_out(out, overwrite)
    command = _command_line(ctx)
    common = {"split": split, "command": command}

    try:
        if fmt == "mind":
            from interestgym.data.mind import prepare_mind
            from interestgym.data.readers import parse_list

            manifest = prepare_mind(input_path, out, text=options["mind_text"], parts=parse_list(options["mind_parts"]),
                                    max_reject_rate=max_reject_rate, tz_offset_hours=tz_offset, **common)
        elif fmt == "movielens":
            from interestgym.data.movielens import prepare_movielens

            manifest = prepare_movielens(input_path, out, tags=options["tags"], max_tags=options["max_tags"],
                                         max_reject_rate=max_reject_rate, tz_offset_hours=tz_offset, **common)
        elif fmt == "events":
            from interestgym.data.events import EventsOptions, prepare_events
            from interestgym.data.readers import (
                parse_actions,
                parse_list,
                parse_renames,
            )

            context = parse_list(options["context"])
            opts = EventsOptions(
                input_format=options["input_format"],
                delimiter=_delimiter(options["delimiter"]),
                columns=parse_list(options["columns"]),
                header=options["header"],
                rename=parse_renames(options["rename"]),
                actions=parse_actions(options["actions"]),
                default_action=options["default_action"],
                time_format=options["time_format"],
                items=options["items_path"],
                items_columns=parse_list(options["items_columns"]),
                item_text=options["item_text"],
                context=[c for c in context if c] if context is not None else None,
                reader=options["reader"] or "auto",
            )
            manifest = prepare_events(input_path, out, options=opts, max_reject_rate=max_reject_rate,
                                      tz_offset_hours=tz_offset, **common)
        else:
            from interestgym.data.synthetic import SyntheticConfig, prepare_synthetic

            given = {k: options[k] for k in _FORMAT_OPTIONS["synthetic"] if options[k] is not None}
            manifest = prepare_synthetic(out, SyntheticConfig(**given), split=split, command=command)
    except DataError as exc:
        raise _with_rejects_file(exc, out) from None
    refused_rows_path(out).unlink(missing_ok=True)  # an earlier refusal's rows: this prepare's are in out/rejects.jsonl
    click.echo(_summary(manifest, out, fmt))
