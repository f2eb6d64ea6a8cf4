"""Throughput of explain_dataset on a user-style workload, and an estimate for a large run.

The workload: a user's torch CNN (a ResNet-18 of width 0.25 from calix.nets, 10 classes) on an
image folder of 64x64 RGB PNG files (written here), explained by occlusion (or --method) in
chunks of --chunk-size images, each chunk reading its own files. Timed:

- the local executor (this process, one torch thread);
- a Dask LocalCluster of 1 and of 2 single-threaded worker processes as explain_dataset starts
  them, and of 1 worker with Dask's default worker environment (the cluster's start and
  the workers' first imports are timed apart; the run itself includes sending the model to
  every worker and building it there).

Then the cost per input is split into model evaluations (counted by the explainer and timed
as batched forward passes) and everything else, and the time for 50 000 images of 224x224 on
N GPUs is estimated from it and a stated GPU forward throughput (--gpu-forward-per-s), with
the arithmetic printed.

Run: .venv/bin/python benchmarks/dataset_scale.py [--n 96] [--method occlusion]
     [--gpu-forward-per-s 2500] [--gpus 1 8 32]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


def _write_images(root: Path, n: int, side: int, seed: int = 0) -> None:
    """``n`` RGB PNG files of smooth random blobs in two class folders."""
    from scipy.ndimage import gaussian_filter
    from skimage import io

    rng = np.random.default_rng(seed)
    for k in range(n):
        img = gaussian_filter(rng.random((side, side, 3)), sigma=(3, 3, 0))
        img = (255 * (img - img.min()) / (np.ptp(img) + 1e-9)).astype(np.uint8)
        f = root / f"class{k % 2}" / f"{k:05d}.png"
        f.parent.mkdir(parents=True, exist_ok=True)
        io.imsave(f, img, check_contrast=False)


class _ForwardClock:
    """Seconds and inputs spent in ``net``'s forward passes (hooks, removed by remove())."""

    def __init__(self, net: nn.Module):
        self.seconds, self.inputs, self._t0 = 0.0, 0, 0.0

        def before(module, args):
            self._t0 = time.perf_counter()

        def after(module, args, out):
            self.seconds += time.perf_counter() - self._t0
            self.inputs += len(args[0])

        self._handles = [net.register_forward_pre_hook(before), net.register_forward_hook(after)]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _warm() -> None:
    """Imports a worker needs for the first chunk (done before timing, as on a warm cluster)."""
    import skimage.io  # noqa: F401
    import skimage.transform  # noqa: F401

    import calix.explain  # noqa: F401
    import calix.parallel  # noqa: F401


def _queries_per_input(method: str, side: int, kwargs: dict) -> int:
    """Model evaluations the explainer makes for one side x side image (a cheap model)."""
    from calix import wrap
    from calix.explain import METHODS

    probe = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10)).eval()
    model = wrap(probe)
    METHODS[method](model, **kwargs).explain(torch.rand(1, 3, side, side))
    return int(model.n_queries)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=96, help="images in the folder")
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--method", default="occlusion")
    ap.add_argument("--n-samples", type=int, default=256,
                    help="coalitions for kernel_shap / lime (ignored by occlusion)")
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument("--gpu-forward-per-s", type=float, default=2500.0,
                    help="assumed 224x224 forward passes per second on one GPU")
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--target-n", type=int, default=50_000)
    ap.add_argument("--target-side", type=int, default=224)
    args = ap.parse_args()

    from distributed import Client, LocalCluster

    from calix.nets import resnet18
    from calix.parallel import ImageFolder, _local_cluster, explain_dataset

    logging.getLogger("distributed").setLevel(logging.ERROR)
    warnings.simplefilter("ignore", DeprecationWarning)
    torch.set_num_threads(1)  # as each Dask worker here: one thread
    method_kwargs = {} if args.method == "occlusion" else {"n_samples": args.n_samples}
    net = resnet18(num_classes=10, width=0.25, seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="calix-dataset-scale-"))
    _write_images(tmp / "images", args.n, args.side)
    folder = ImageFolder(tmp / "images")
    print(f"workload: {args.n} RGB {args.side}x{args.side} PNG files, ResNet-18 (width 0.25, "
          f"{sum(p.numel() for p in net.parameters()):,} parameters), {args.method} "
          f"{method_kwargs or ''}, chunks of {args.chunk_size}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch thread per process")

    def timed(name: str, **kw) -> tuple[float, object]:
        t0 = time.perf_counter()
        res = explain_dataset(folder, net, args.method, out=tmp / name,
                              chunk_size=args.chunk_size, method_kwargs=method_kwargs, **kw)
        return time.perf_counter() - t0, res

    rows = []
    forward = _ForwardClock(net)  # time inside the network's forward passes, in this run
    secs, local = timed("local")
    forward.remove()
    rows.append(("local executor (1 process, 1 thread)", secs, None, True))
    # explain_dataset's own LocalCluster (scheduler=None), started here to time it apart;
    # then one with Dask's default worker environment (its nanny sets MALLOC_TRIM_THRESHOLD_
    # in this process's environment for good, so it comes last)
    for workers, dask_env in ((1, False), (2, False), (1, True)):
        t0 = time.perf_counter()
        cluster = (LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                dashboard_address=None) if dask_env
                   else _local_cluster(workers))
        client = Client(cluster)
        client.run(_warm)
        start = time.perf_counter() - t0
        try:
            secs, res = timed(f"dask{len(rows)}", executor="dask", scheduler=client)
        finally:
            client.close()
            cluster.close()
        same = all(np.array_equal(getattr(res, k), getattr(local, k))
                   for k in ("values", "target", "indices"))
        what = "Dask's default env" if dask_env else "as explain_dataset starts it"
        rows.append((f"LocalCluster {workers} worker x 1 thread ({what})", secs, start, same))

    print(f"\nload average of this machine (shared): "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    print(f"\n{'executor':<64}{'seconds':>9}{'inputs/s':>10}  {'start+imports':>13}  "
          "bitwise = local")
    for name, secs, start, same in rows:
        st = "" if start is None else f"{start:.1f} s"
        print(f"{name:<64}{secs:>9.2f}{args.n / secs:>10.2f}  {st:>13}  {same}")

    # ----------------------------------------------------------------- the estimate
    q_small = _queries_per_input(args.method, args.side, method_kwargs)
    q_big = _queries_per_input(args.method, args.target_side, method_kwargs)
    per_input = rows[0][1] / args.n
    forward_part = forward.seconds / args.n
    rest = max(per_input - forward_part, 0.0)
    scale = (args.target_side / args.side) ** 2
    rest_big = rest * scale
    gpu_per_input = q_big / args.gpu_forward_per_s
    print(f"\nper input, measured in the local run (one CPU thread, {args.side}x{args.side}):"
          f"\n  {per_input * 1e3:.1f} ms = {forward_part * 1e3:.1f} ms in the network's forward "
          f"passes ({q_small} evaluations per input, {forward.inputs} in all; "
          f"{forward.inputs / forward.seconds:.0f} images/s)\n"
          f"          + {rest * 1e3:.1f} ms everything else (reading the PNG, building the "
          f"perturbed batches, scoring, writing the chunk)")
    print(f"\nestimate for {args.target_n:,} images of {args.target_side}x{args.target_side}, "
          f"one single-GPU Dask worker per GPU:\n"
          f"  assumption: one GPU runs {args.gpu_forward_per_s:.0f} forward passes/s at "
          f"{args.target_side}x{args.target_side} (a ResNet-50-class network in bf16, batches "
          f"of 256; a ResNet-18 is about 3x faster) -- pass --gpu-forward-per-s to change it\n"
          f"  model evaluations per input at {args.target_side}x{args.target_side}: "
          f"{q_big} ({args.method}; counted)\n"
          f"  GPU time per input: {q_big} / {args.gpu_forward_per_s:.0f} per s = "
          f"{gpu_per_input * 1e3:.1f} ms\n"
          f"  other work per input, scaled by the pixel count from the measured "
          f"{rest * 1e3:.1f} ms: x ({args.target_side}/{args.side})^2 = x {scale:.2f} -> "
          f"{rest_big * 1e3:.1f} ms on one CPU thread (an upper bound: on a GPU worker the "
          "perturbed batches are built on the GPU)")
    files = folder.files
    n_bytes = sum(f.stat().st_size for f in files)
    t0 = time.perf_counter()
    ImageFolder(folder.root)._bind(None)  # lists, reads and hashes every file (SHA-256)
    hash_rate = n_bytes / (time.perf_counter() - t0)
    big_bytes = args.target_n * n_bytes / len(files) * scale
    print(f"  before the run the caller hashes every file once (the manifest's SHA-256): "
          f"measured {hash_rate / 1e6:.0f} MB/s here; {args.target_n:,} files x "
          f"{n_bytes / len(files) / 1e3:.1f} kB x {scale:.2f} = {big_bytes / 1e9:.2f} GB -> "
          f"{big_bytes / hash_rate:.0f} s (PNG of noise-free blobs; photos as JPEG are "
          "smaller)")
    print(f"\n  {'GPUs':>5}  {'GPU-bound (lower bound)':>26}  "
          f"{'+ other work on 1 CPU thread/GPU':>34}")
    for n_gpu in args.gpus:
        lower = args.target_n * gpu_per_input / n_gpu
        upper = args.target_n * (gpu_per_input + rest_big) / n_gpu
        print(f"  {n_gpu:>5}  {args.target_n:,} x {gpu_per_input * 1e3:.1f} ms / {n_gpu} = "
              f"{lower / 3600:>5.2f} h   {args.target_n:,} x "
              f"({gpu_per_input * 1e3:.1f} + {rest_big * 1e3:.1f}) ms / {n_gpu} = "
              f"{upper / 3600:.2f} h")
    print(f"\nrun folders under {tmp}")


if __name__ == "__main__":
    main()
