"""The wheels a bare GPU node needs to run bench/gpu_check.py, small enough to travel beside the checkout.

    python bench/gpu_bundle.py [--out gpu_bundle] [--limit-mib 64] [--xz] [--with-numpy] [--no-slim]
                               [--verify PYTHON3.12]

The node has CPython 3.12 with torch (CUDA) and numpy, and no network. This downloads the
CPython 3.12 manylinux x86_64 wheels (``pip download --only-binary=:all: --no-deps``) of Ray
2.60 and of everything else the GPU path imports that torch does not bring: Ray's own hard
dependencies, what ``import ray.train`` insists on (pandas, pyarrow, fsspec, requests), what the
project imports (pydantic, PyYAML, Pillow; matplotlib for each stage's confusion-matrix
picture), each at the version this checkout's .venv holds (the versions the tests ran with).
:data:`PACKAGES` is the list; every wheel's own requirements must be in it or in :data:`ON_NODE`
(checked, so the list cannot silently fall behind). MLflow is left out: the check runs with
tracking off and never imports it. ``--with-numpy`` bundles numpy too, for a node without it.

Each wheel is then slimmed (unless ``--no-slim``): the files of :data:`DROP` go (Ray's Java jars,
dashboard web client, RLlib, Serve and LLM; pyarrow's Flight and S3 libraries, headers, Cython
sources and tests; pandas' and matplotlib's tests; ...), ELF libraries and programs lose their
symbol tables (``strip --strip-unneeded``, when ``strip`` is there), and the wheel's RECORD is
rewritten with the new hashes and sizes, so pip installs it as any other. Prints each wheel's
size before and after and the total, and exits non-zero, naming the largest wheels, when the
total exceeds ``--limit-mib``.

``--xz``: pack the wheels, stored uncompressed, into ``<out>.tar.xz`` instead (LZMA compresses
the native libraries about a third better than a wheel's deflate): the archive is what travels
and what the limit applies to; it unpacks as ``<out>/`` (its folder of stored wheels, about
four times the size, stays here as ``<out>.stored``). ``--verify PYTHON``: install the bundle offline into a fresh
venv of that Python 3.12 (numpy from the download folder, as the node has its own; no torch)
and run Ray, Ray Data with an actor pool, Ray Train's import, the scene generator and a
matplotlib picture there.

On the node (the folder, or the archive unpacked with ``tar xJf gpu_bundle.tar.xz``)::

    python3 -m venv --system-site-packages /tmp/udas        # sees the node's torch and numpy
    /tmp/udas/bin/pip install --no-index --find-links gpu_bundle -r gpu_bundle/requirements.txt
    /tmp/udas/bin/python bench/gpu_check.py --out gpu_check.json

(without the venv module: ``python3 -m pip install --no-deps --target /tmp/site --no-index
--find-links gpu_bundle -r gpu_bundle/requirements.txt`` and ``PYTHONPATH=/tmp/site``; the
requirements list every package, so nothing is left to resolve.) ``pip install ray pydantic
pyyaml`` alone is not enough: ``import ray.train`` refuses to load without pandas, pyarrow and
fsspec.

Raw downloads are kept in ``<out>.raw`` (reused by the next build). Both folders are ignored
by git (.gitignore); wheels are never committed.
"""

from __future__ import annotations

import argparse
import base64
import csv
import fnmatch
import hashlib
import importlib.metadata
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
PLATFORM_ARGS = ["--only-binary=:all:", "--no-deps", "--python-version", "3.12", "--implementation", "cp",
                 "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64"]
# Markers of the node, for the wheels' own requirements.
NODE_ENV = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}

# name -> why it is needed (pinned to this checkout's .venv versions).
PACKAGES = {
    "ray": "Ray core, Train and Data (2.60, the version udas-ray is tested with)",
    # Ray's hard requirements
    "click": "ray", "filelock": "ray (also torch's)", "jsonschema": "ray", "msgpack": "ray",
    "packaging": "ray, matplotlib", "protobuf": "ray", "pyyaml": "ray, udas_ray.config", "requests": "ray, ray.train",
    "attrs": "jsonschema", "jsonschema-specifications": "jsonschema", "referencing": "jsonschema",
    "rpds-py": "jsonschema", "certifi": "requests", "charset-normalizer": "requests", "idna": "requests",
    "urllib3": "requests",
    # what `import ray.train` checks for, and Ray Data's blocks
    "pandas": "ray.train", "pyarrow": "ray.train, ray.data, udas_ray.stages.loop", "fsspec": "ray.train (also torch's)",
    "python-dateutil": "pandas, matplotlib", "six": "python-dateutil",
    # the project
    "pydantic": "udas_ray.config", "pydantic-core": "pydantic", "annotated-types": "pydantic",
    "typing-extensions": "pydantic (also torch's)", "typing-inspection": "pydantic",
    "pillow": "udas_ray.data.images", "matplotlib": "udas_ray.visualize (every stage's confusion matrix)",
    "contourpy": "matplotlib", "cycler": "matplotlib", "fonttools": "matplotlib", "kiwisolver": "matplotlib",
    "pyparsing": "matplotlib",
}
# On the node already, beside torch: left out of the bundle (numpy is downloaded for --verify only).
ON_NODE = {"numpy"}

# Files each wheel can do without (fnmatch patterns over the paths inside the wheel).
DROP = {
    "ray": ["ray/jars/*",  # Java workers: never started by udas-ray
            "ray/dashboard/client/build/*",  # the dashboard's web page (udas-ray starts Ray without it)
            "ray/rllib/*", "ray/serve/*", "ray/llm/*",  # libraries udas-ray does not import
            "*.pyi", "*.pxd"],
    "pyarrow": ["pyarrow/libarrow_flight.so*", "pyarrow/libarrow_python_flight.so*", "pyarrow/_flight.*",  # Flight RPC
                "pyarrow/libarrow_s3.so*", "pyarrow/_s3fs.*",  # S3 (pyarrow.fs imports it only if present)
                "pyarrow/libarrow_python.so", "pyarrow/libarrow_python.so.*.*.*",  # copies for linking C++
                "pyarrow/libarrow_python_parquet_encryption.so", "pyarrow/libarrow_python_parquet_encryption.so.*.*.*",
                "pyarrow/_pyarrow_cpp_tests.*", "pyarrow/include/*", "pyarrow/includes/*", "pyarrow/src/*",
                "pyarrow/tests/*", "*.pyx", "*.pxd", "*.pxi", "*.h", "*.hpp", "*.cc"],
    "pandas": ["pandas/tests/*", "*.pyx", "*.pxd", "*.pyi"],
    "matplotlib": ["matplotlib/tests/*", "matplotlib/mpl-data/sample_data/*", "matplotlib/mpl-data/fonts/afm/*",
                   "matplotlib/mpl-data/fonts/pdfcorefonts/*", "matplotlib/mpl-data/fonts/ttf/STIX*",
                   "matplotlib/mpl-data/fonts/ttf/cm*", "mpl_toolkits/*/tests/*", "*.pyi"],
    # compiled accelerators of modules that are also there as Python (fontTools is Cython's pure-Python mode)
    "fonttools": ["fontTools/*.so", "fontTools/*.c"],
    "pillow": ["PIL/_avif.*", "pillow.libs/libavif-*"],  # AVIF (the AVIF plugin imports it only if present)
    "numpy": ["numpy/tests/*", "numpy/*/tests/*", "numpy/*/*/tests/*", "*.pyi"],  # --with-numpy
}


def versions(names) -> dict[str, str]:
    """Each package of ``names`` at the version installed in this environment."""
    out, missing = {}, []
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        raise SystemExit(f"not installed here, so no version to pin: {', '.join(missing)} (run make setup)")
    return out


def download(pins: list[str], dest: Path) -> None:
    """``pip download`` the wheels of ``pins`` (name==version) for the node into ``dest`` (kept between runs)."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted = [p for p in pins if wheel_of(dest, p.split("==")[0], p.split("==")[1]) is None]
    if wanted:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        *PLATFORM_ARGS, "-d", str(dest), *wanted], check=True)


def normal(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def wheel_of(folder: Path, name: str, version: str) -> Path | None:
    found = [w for w in folder.glob("*.whl") if normal(w.name.split("-")[0]) == normal(name)
             and w.name.split("-")[1] == version]
    return found[0] if found else None


def requirements(wheel: Path) -> list[str]:
    """Names of the requirements of ``wheel`` that apply on the node (no extras)."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    names = []
    for line in lines:
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or req.marker.evaluate(NODE_ENV):
                names.append(normal(req.name))
    return names


def check_closure(wheels: dict[str, Path], on_node: set[str]) -> None:
    """Every requirement of every bundled wheel is bundled too, or on the node."""
    have = {normal(n) for n in wheels} | {normal(n) for n in on_node}
    gaps = [f"{name} needs {req}" for name, wheel in wheels.items() for req in requirements(wheel) if req not in have]
    if gaps:
        raise SystemExit("the bundle is not complete: " + "; ".join(gaps) + " (add them to PACKAGES)")


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def strip_elf(data: bytes, strip: str | None) -> bytes:
    """``data`` without its symbol table, if it is an ELF file that ``strip`` makes smaller."""
    if strip is None or data[:4] != b"\x7fELF":
        return data
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(data)
    try:
        if subprocess.run([strip, "--strip-unneeded", f.name], capture_output=True).returncode != 0:
            return data
        stripped = Path(f.name).read_bytes()
        return stripped if len(stripped) < len(data) else data
    finally:
        os.unlink(f.name)


def slim(src: Path, dst: Path, drop: list[str], strip: str | None, compression: int = zipfile.ZIP_DEFLATED) -> int:
    """Rewrite the wheel ``src`` as ``dst`` without the files matching ``drop``, ELF files
    stripped, and a RECORD that lists what is left; returns how many files were dropped."""
    dropped = 0
    with zipfile.ZipFile(src) as zin:
        names = zin.namelist()
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        signatures = {record + ".jws", record + ".p7s"}
        rows = []
        with zipfile.ZipFile(dst, "w", compression, compresslevel=9 if compression == zipfile.ZIP_DEFLATED else None) as zout:
            for info in zin.infolist():
                name = info.filename
                if name == record or name in signatures:
                    continue
                if name.endswith("/") or any(fnmatch.fnmatchcase(name, p) for p in drop):
                    dropped += not name.endswith("/")
                    continue
                data = strip_elf(zin.read(info), strip)
                out = zipfile.ZipInfo(name, date_time=info.date_time)
                out.external_attr, out.create_system = info.external_attr, info.create_system  # executables stay so
                out.compress_type = compression
                zout.writestr(out, data)
                rows.append((name, record_hash(data), str(len(data))))
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerows([*rows, (record, "", "")])
            info = zipfile.ZipInfo(record, date_time=zin.getinfo(record).date_time)
            info.external_attr, info.compress_type = zin.getinfo(record).external_attr, compression
            zout.writestr(info, text.getvalue())
    return dropped


def build(out: Path, raw: Path, do_slim: bool, compression: int = zipfile.ZIP_DEFLATED,
          with_numpy: bool = False) -> list[dict]:
    """Download, check and slim every wheel into ``out``; one row per wheel."""
    packages = {**PACKAGES, **({"numpy": "pandas, pyarrow, matplotlib, udas_ray"} if with_numpy else {})}
    pins = versions(packages)
    download([f"{n}=={v}" for n, v in pins.items()], raw)
    wheels = {n: wheel_of(raw, n, v) for n, v in pins.items()}
    absent = [n for n, w in wheels.items() if w is None]
    if absent:
        raise SystemExit(f"pip download left no wheel for {', '.join(absent)}")
    check_closure(wheels, ON_NODE - set(packages))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    strip = shutil.which("strip") if do_slim else None
    rows = []
    for name, wheel in wheels.items():
        target = out / wheel.name
        dropped = slim(wheel, target, DROP.get(name, []) if do_slim else [], strip, compression)
        rows.append({"name": name, "version": pins[name], "raw": wheel.stat().st_size,
                     "bundled": target.stat().st_size, "dropped_files": dropped, "why": packages[name]})
    (out / "requirements.txt").write_text("".join(f"{n}=={pins[n]}\n" for n in wheels))
    return rows


def pack_xz(folder: Path, archive: Path, name: str) -> int:
    """``folder`` as ``archive`` (tar, LZMA preset 9; unpacks as ``name``/); its size. The ``xz``
    program on every core when there is one, else Python's lzma (one core, a few minutes)."""
    archive.unlink(missing_ok=True)
    if shutil.which("xz"):
        with open(archive, "wb") as f:
            tar = subprocess.Popen(["tar", "-cf", "-", "-C", str(folder.parent), f"--transform=s,^{folder.name},{name},",
                                    folder.name], stdout=subprocess.PIPE)
            subprocess.run(["xz", "-9", "-T0", "-c"], stdin=tar.stdout, stdout=f, check=True)
            if tar.wait() != 0:
                raise SystemExit(f"tar of {folder} failed")
    else:
        with tarfile.open(archive, "w:xz", preset=9) as tar:
            tar.add(folder, arcname=name)
    return archive.stat().st_size


def report(rows: list[dict]) -> int:
    print(f"{'package':<28} {'version':<22} {'wheel MB':>9} {'bundled MB':>11} {'dropped':>8}")
    for r in sorted(rows, key=lambda r: -r["bundled"]):
        print(f"{r['name']:<28} {r['version']:<22} {r['raw'] / 1e6:9.2f} {r['bundled'] / 1e6:11.2f} "
              f"{r['dropped_files']:>8}")
    total = sum(r["bundled"] for r in rows)
    print(f"{'total':<51} {sum(r['raw'] for r in rows) / 1e6:9.2f} {total / 1e6:11.2f}   "
          f"({total / MIB:.1f} MiB)")
    return total


VERIFY = r"""
import sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import numpy as np, pyarrow as pa, pandas, pydantic, yaml, PIL.Image
import ray, ray.data, ray.train, ray.tune
from ray.train import TrainingFailedError
from ray.data import ExecutionOptions
import pyarrow.fs  # Ray Data's file systems (without the S3 library)

class Double:  # a Ray Data callable class on an actor pool, as the training batches and pseudo-labels use
    def __call__(self, batch):
        return {"id": batch["id"] * 2}

ray.init(address="local", num_cpus=2, include_dashboard=False)
ds = ray.data.from_arrow([pa.table({"id": np.arange(i * 8, i * 8 + 8)}) for i in range(4)])
ds = ds.map_batches(Double, batch_size=4, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.5)
total = sum(int(b["id"].sum()) for b in ds.iter_batches(batch_size=None, batch_format="numpy"))
assert total == 2 * sum(range(32)), total
assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
ray.shutdown()

from udas_ray.data import scenes
from udas_ray import visualize
with tempfile.TemporaryDirectory() as tmp:
    scenes.write_target(Path(tmp) / "t", num_train=1, num_val=1, size=(64, 128), seed=0)
picture = visualize.confusion_figure(np.eye(19) * 10)
assert picture.ndim == 3 and picture.shape[2] == 3
print("verified: ray", ray.__version__, "pyarrow", pa.__version__, "pandas", pandas.__version__,
      "pydantic", pydantic.__version__, "Ray Data actor pool, scene generator, matplotlib picture")
"""


def verify(python: str, bundle: Path, raw: Path) -> None:
    """Install ``bundle`` offline into a fresh venv of ``python`` (numpy from ``raw``) and use it."""
    numpy = f"numpy=={importlib.metadata.version('numpy')}"
    download([numpy], raw)
    with tempfile.TemporaryDirectory(prefix="gpubundle-venv-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--no-index", "--find-links", str(bundle), "--find-links", str(raw)]
        subprocess.run([*pip, numpy, "-r", str(bundle / "requirements.txt")], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-c", VERIFY, str(ROOT)], check=True, cwd=tmp)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "gpu_bundle", help="the bundle folder (replaced)")
    p.add_argument("--limit-mib", type=float, default=64.0, help="what may travel, in MiB")
    p.add_argument("--no-slim", action="store_true", help="the wheels as downloaded (no files dropped, no strip)")
    p.add_argument("--xz", action="store_true", help="pack the bundle into <out>.tar.xz, which then travels")
    p.add_argument("--with-numpy", action="store_true", help="bundle numpy too (for a node without it)")
    p.add_argument("--verify", metavar="PYTHON", help="a Python 3.12 to install the bundle into offline and try it")
    args = p.parse_args()
    out = args.out.resolve()
    raw = out.with_name(out.name + ".raw")
    if args.xz:  # stored wheels in the archive: LZMA compresses them better than deflate did
        stored = out.with_name(out.name + ".stored")  # the folder the archive is made of (not carried)
        rows = build(stored, raw, not args.no_slim, zipfile.ZIP_STORED, args.with_numpy)
        total = report(rows)
        if out.exists():  # what travels is the archive alone
            shutil.rmtree(out)
        archive = out.with_name(out.name + ".tar.xz")
        print(f"packing {stored.name} into {archive.name} (LZMA preset 9)")
        carried = pack_xz(stored, archive, out.name)
        print(f"{archive}: {carried / 1e6:.2f} MB ({carried / MIB:.1f} MiB) travels; it unpacks as {out.name}/ "
              f"({total / MIB:.1f} MiB of stored wheels)")
        out = stored
    else:
        rows = build(out, raw, not args.no_slim, with_numpy=args.with_numpy)
        carried = report(rows)
    if args.verify:
        verify(args.verify, out, raw)
    if carried > args.limit_mib * MIB:
        biggest = ", ".join(f"{r['name']} {r['bundled'] / MIB:.1f}" for r in sorted(rows, key=lambda r: -r["bundled"])[:4])
        print(f"FAILED: {carried / MIB:.1f} MiB exceeds the {args.limit_mib:g} MiB that may travel; "
              f"the largest wheels (MiB): {biggest}" + ("" if args.xz else "; --xz packs them about a third smaller"),
              file=sys.stderr)
        return 1
    print(f"OK: {carried / MIB:.1f} MiB of {args.limit_mib:g} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
