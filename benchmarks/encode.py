"""Benchmark: the product's BERT encode path against a plain transformers loop, and the cache.

Measured in one run, on the same machine, so only the ratios matter:

1. **product / plain loop**: texts per second of :class:`interestgym.encoders.bert.BertEncoder`
   (length-sorted batches, inference_mode) against the straightforward loop most code uses: same
   model, batch size and threads, texts in their original order, each batch padded to its longest
   text, mean pooling, L2 normalisation. Model loading is excluded from both. The two are run
   alternately ``--repeats`` times and the medians compared (other load on the machine hits both).
2. **first run / cached run** of the whole encode stage (:func:`encode_dataset` on a dataset in a
   temporary folder): the first run loads the model and encodes every text; the second, with a
   fresh encoder, finds every text in the cache and never loads the model.
3. with ``--onnx``: the ONNX Runtime backend against the torch product path (export time printed
   separately; it is paid once per model and dataset).

Two comparisons run on their own (without 1-3):

4. ``--quantize int8``: the int8-quantised ONNX model against the float32 ONNX model (both exported
   once into a temporary folder, excluded from the timings), with the same pinned thread count
   (``--threads``), alternated ``--repeats`` times, medians compared; plus the cosine of every int8
   vector with its float32 vector (mean, 1st percentile, min). The load average is printed before
   and after: on a shared machine, other work moves both sides, which is why they alternate.
5. ``--device cuda``: the product path on the GPU (bf16 / fp16 as ``auto`` picks, batch sized from
   free memory unless ``--batch-size`` is given) against the product path on the CPU, alternated,
   texts/s of each and the ratio, plus the cosine of the GPU's half-precision vectors with the CPU's
   float32 ones. ``--tile K`` repeats the texts K times (a GPU needs more than 1,682 titles to be
   busy; the CPU side then takes K times as long).

Texts: the 1,682 MovieLens-100K titles from ``../shared/data/ml-100k/u.item`` when present, else
seeded synthetic titles of similar length.

    python benchmarks/encode.py                 # MiniLM, batch 64
    python benchmarks/encode.py --onnx --repeats 5
    python benchmarks/encode.py --model /models/bert-base-chinese --batch-size 32
    python benchmarks/encode.py --quantize int8 --threads 2 --repeats 5
    python benchmarks/encode.py --device cuda --tile 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
ML100K_ITEMS = REPO.parent / "shared" / "data" / "ml-100k" / "u.item"


def load_texts(limit: int | None) -> tuple[list[str], str]:
    if ML100K_ITEMS.is_file():
        titles = pd.read_csv(ML100K_ITEMS, sep="|", header=None, encoding="latin-1", usecols=[1])[1].fillna("").astype(str)
        texts, source = titles.tolist(), f"ml-100k titles ({ML100K_ITEMS})"
    else:
        rng = np.random.default_rng(0)
        vocab = ("love story night man woman city war dead life house return king american time girl day "  # noqa: SIM905
                 "dark blue last world dream the of in a lost secret island summer winter murder").split()
        texts = [" ".join(rng.choice(vocab, size=rng.integers(1, 7))).title() + f" ({rng.integers(1930, 1999)})"
                 for _ in range(1682)]
        source = "synthetic titles (shared data absent)"
    return (texts[:limit] if limit else texts), source


def plain_loop(tokenizer, model, texts: list[str], batch_size: int, max_length: int) -> np.ndarray:
    """The reference: original order, pad each batch to its longest text, mean pooling."""
    import torch

    rows = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            rows.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
    return np.concatenate(rows)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def load_average() -> str:
    try:
        return "load average " + " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)"
    except OSError:  # pragma: no cover - not Unix
        return "load average unavailable"


def alternate(first, second, repeats: int) -> tuple[list[float], list[float], object, object]:
    """Time ``first`` and ``second`` alternately ``repeats`` times; return both lists of seconds and the last outputs."""
    times_a, times_b, out_a, out_b = [], [], None, None
    for _ in range(repeats):
        t, out_a = timed(first)
        times_a.append(t)
        t, out_b = timed(second)
        times_b.append(t)
    return times_a, times_b, out_a, out_b


def cosine_report(a: np.ndarray, b: np.ndarray) -> str:
    cos = (a.astype(np.float64) * b).sum(axis=1)  # rows are unit vectors
    return f"cosine mean {cos.mean():.4f}, 1st percentile {np.percentile(cos, 1):.4f}, min {cos.min():.4f} over {len(cos)} texts"


def compare_quantized(model_path: Path, texts: list[str], args: argparse.Namespace) -> None:
    """int8 ONNX vs float32 ONNX: same texts, threads and batch size, alternated."""
    from interestgym.encoders.bert import BertEncoder

    print(load_average() + " (before)")
    with tempfile.TemporaryDirectory() as onnx_dir:
        fp32 = BertEncoder(model_path, device="cpu", batch_size=args.batch_size, backend="onnx", onnx_dir=onnx_dir,
                           threads=args.threads)
        int8 = BertEncoder(model_path, device="cpu", batch_size=args.batch_size, backend="onnx", onnx_dir=onnx_dir,
                           quantize=args.quantize, threads=args.threads)
        export_s, _ = timed(fp32.load)
        quantize_s, _ = timed(int8.load)
        for enc in (fp32, int8):  # warm-up
            enc.encode(texts[: args.batch_size], progress=False)
        fp32_times, int8_times, full, quantised = alternate(lambda: fp32.encode(texts, progress=False),
                                                            lambda: int8.encode(texts, progress=False), args.repeats)
    fp32_s, int8_s = statistics.median(fp32_times), statistics.median(int8_times)
    runs = lambda times: ", ".join(f"{x:.2f}" for x in times)
    print(f"onnx float32            : {len(texts) / fp32_s:8.1f} texts/s  (median {fp32_s:.2f} s; runs {runs(fp32_times)}; "
          f"one-off export {export_s:.1f} s)")
    print(f"onnx {args.quantize:<19}: {len(texts) / int8_s:8.1f} texts/s  (median {int8_s:.2f} s; runs {runs(int8_times)}; "
          f"one-off quantisation {quantize_s:.1f} s)")
    print(f"ratio {args.quantize} / float32    : {fp32_s / int8_s:.2f}x faster")
    print(f"agreement with float32  : {cosine_report(quantised, full)}")
    print(load_average() + " (after)")


def compare_cuda(model_path: Path, texts: list[str], args: argparse.Namespace) -> None:
    """The product path on CUDA vs on CPU: texts/s and the ratio."""
    from interestgym.encoders.bert import BertEncoder

    print(load_average() + " (before)")
    gpu = BertEncoder(model_path, device="cuda", precision=args.precision, batch_size=args.cuda_batch_size)
    cpu = BertEncoder(model_path, device="cpu", batch_size=args.batch_size, threads=args.threads)
    gpu.load()
    cpu.load()
    import torch

    print(f"GPU: {torch.cuda.get_device_name(0)}; precision {gpu.precision}; batch size {gpu.batch_size}"
          f"{' (from free memory)' if gpu.batch_size_from_memory else ''}; CPU: {cpu.threads} threads, batch {cpu.batch_size}")
    for enc in (gpu, cpu):
        enc.encode(texts[:512], progress=False)
    torch.cuda.synchronize()
    gpu_times, cpu_times, on_gpu, on_cpu = alternate(lambda: gpu.encode(texts, progress=False),
                                                     lambda: cpu.encode(texts, progress=False), args.repeats)
    gpu_s, cpu_s = statistics.median(gpu_times), statistics.median(cpu_times)
    print(f"cuda {gpu.precision:<19}: {len(texts) / gpu_s:8.1f} texts/s  (median {gpu_s:.2f} s)")
    print(f"cpu float32             : {len(texts) / cpu_s:8.1f} texts/s  (median {cpu_s:.2f} s)")
    print(f"ratio cuda / cpu        : {cpu_s / gpu_s:.1f}x")
    print(f"agreement with cpu fp32 : {cosine_report(on_gpu, on_cpu)}")
    print(load_average() + " (after)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm", help="minilm or a local model folder")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed runs of each path (median used)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N texts")
    parser.add_argument("--onnx", action="store_true", help="also time the ONNX Runtime backend")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="only compare the quantised ONNX model with the float32 one (speed and cosine)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: only compare the product path on the GPU with the CPU one")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of torch / onnxruntime (default: every CPU)")
    parser.add_argument("--tile", type=int, default=1, help="repeat the texts this many times")
    parser.add_argument("--precision", choices=["auto", "fp16", "bf16", "fp32"], default="auto", help="GPU precision")
    parser.add_argument("--cuda-batch-size", type=int, default=None, help="GPU batch size (default: from free memory)")
    args = parser.parse_args()

    import torch
    from interestgym.encoders.bert import BertEncoder, available_cpus, minilm_path
    from interestgym.encoders.pipeline import encode_dataset
    from transformers import AutoModel, AutoTokenizer

    from interestgym.data.dataset import SplitSpec, write_dataset
    from interestgym.data.validate import RejectLog

    texts, source = load_texts(args.limit)
    texts = texts * max(1, args.tile)
    model_path = minilm_path() if args.model == "minilm" else Path(args.model)
    args.threads = args.threads or available_cpus()
    torch.set_num_threads(args.threads)
    if args.quantize or args.device == "cuda":
        print(f"== encode benchmark: {'--quantize ' + args.quantize if args.quantize else '--device cuda'} ==")
        print(f"texts: {len(texts)} {source}{f' x {args.tile}' if args.tile > 1 else ''}; model {model_path}; "
              f"batch size {args.batch_size}; {args.threads} threads (pinned) on {available_cpus()} CPUs; repeats {args.repeats}")
        if args.quantize:
            compare_quantized(model_path, texts, args)
        if args.device == "cuda":
            if not torch.cuda.is_available():
                sys.exit("--device cuda: torch sees no CUDA device here (torch.cuda.is_available() is False)")
            compare_cuda(model_path, texts, args)
        return
    product = BertEncoder(model_path, device="cpu", batch_size=args.batch_size, threads=args.threads)
    product.load()  # sets torch threads; loading is excluded from the timings
    tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
    model = AutoModel.from_pretrained(str(model_path), local_files_only=True).eval()
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=product.max_length)["input_ids"]]

    print("== encode benchmark ==")
    print(load_average() + " (before)")
    print(f"texts: {len(texts)} {source}; tokens per text: mean {np.mean(lengths):.1f}, max {max(lengths)}")
    print(f"model: {model_path} (pooling {product.pooling}, max_length {product.max_length}); batch size {args.batch_size}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads on {available_cpus()} CPUs; repeats {args.repeats}")

    # Warm-up (first calls allocate and pick kernels), then alternate the two paths.
    plain_loop(tokenizer, model, texts[: args.batch_size], args.batch_size, product.max_length)
    product.encode(texts[: args.batch_size], progress=False)
    plain_times, product_times = [], []
    for _ in range(args.repeats):
        t, reference = timed(lambda: plain_loop(tokenizer, model, texts, args.batch_size, product.max_length))
        plain_times.append(t)
        t, ours = timed(lambda: product.encode(texts, progress=False))
        product_times.append(t)
    plain_s, product_s = statistics.median(plain_times), statistics.median(product_times)
    runs = lambda times: ", ".join(f"{x:.2f}" for x in times)
    print(f"plain transformers loop : {len(texts) / plain_s:8.1f} texts/s  (median {plain_s:.2f} s; runs {runs(plain_times)})")
    print(f"interestgym BertEncoder : {len(texts) / product_s:8.1f} texts/s  (median {product_s:.2f} s; runs {runs(product_times)})")
    print(f"ratio product / plain   : {plain_s / product_s:.2f}x   (max |difference| of vectors {np.abs(ours - reference).max():.1e})")

    if args.onnx:
        with tempfile.TemporaryDirectory() as onnx_dir:
            onnx = BertEncoder(model_path, device="cpu", batch_size=args.batch_size, backend="onnx", onnx_dir=onnx_dir,
                               threads=args.threads)  # pinned as the torch side (its load would set every CPU otherwise)
            export_s, _ = timed(onnx.load)
            onnx.encode(texts[: args.batch_size], progress=False)
            onnx_times, torch_times = [], []
            for _ in range(args.repeats):
                t, via_onnx = timed(lambda: onnx.encode(texts, progress=False))
                onnx_times.append(t)
                t, _ = timed(lambda: product.encode(texts, progress=False))
                torch_times.append(t)
            onnx_s, torch_s = statistics.median(onnx_times), statistics.median(torch_times)
            print(f"onnx backend            : {len(texts) / onnx_s:8.1f} texts/s  "
                  f"(median {onnx_s:.2f} s; one-off export + load {export_s:.1f} s)")
            print(f"ratio onnx / torch path : {torch_s / onnx_s:.2f}x   (torch path median {torch_s:.2f} s this round; "
                  f"max |difference| {np.abs(via_onnx - ours).max():.1e})")

    with tempfile.TemporaryDirectory() as tmp:
        ids = [str(i + 1) for i in range(len(texts))]
        items = pd.DataFrame({"item_id": ids, "text": texts, "category": "", "subcategory": ""})
        events = pd.DataFrame({"user_id": ["1"], "ts": np.array([0], dtype="int64"), "item_id": ["1"], "action": "click",
                               "value": np.float32(1.0), "hour": np.int8(0), "weekday": np.int8(0), "seq": np.array([0], dtype="int64")})
        write_dataset(Path(tmp) / "ds", source_format="benchmark", source_files=[], items=items, events=events,
                      rejects=RejectLog(), split=SplitSpec(), deterministic=True)
        def stage():  # a fresh encoder each time, as a new `interestgym encode` process would have
            return encode_dataset(Path(tmp) / "ds", BertEncoder(model_path, device="cpu", batch_size=args.batch_size, threads=args.threads),
                                  progress=False, log=None)

        first_s, first = timed(stage)
        cached_s, cached = timed(stage)
        assert cached.encoded == 0 and np.array_equal(first.matrix, cached.matrix)
        print(f"encode stage, first run : {first_s:6.2f} s  (model load + {first.encoded} texts encoded)")
        print(f"encode stage, cached run: {cached_s:6.3f} s  ({cached.from_cache} texts from cache, model not loaded)")
        print(f"ratio first / cached    : {first_s / cached_s:.0f}x")
    print(load_average() + " (after)")


if __name__ == "__main__":
    sys.exit(main())
