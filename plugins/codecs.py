"""Built-in codecs: ``msgpack+zstd+dict`` (the default), ``msgpack+lz4``, ``msgpack+zstd``
and ``msgpack``. ``COMPRESSION_THRESHOLD`` is the size above which a payload is compressed.

``msgpack+zstd+dict`` trains a zstd dictionary on the entries it writes, by itself, after
``R1MW_ZSTD_TRAIN_AFTER`` of them, and keeps its dictionaries in ``R1MW_ZSTD_DICT_DIR``
(default ``<cache dir>/zstd-dicts``): about 33 % of the raw JSON per R1 reply (lz4: 59 %).
Whatever the codec, the pipeline's codec knows that directory, so entries another process
wrote with a dictionary are read (the dictionary is loaded by the id in the entry).

``msgpack+zstd`` uses a fixed dictionary when one is there (``R1MW_ZSTD_DICT``, default
``<cache dir>/zstd.dict``); ``r1mw zstd-dict`` trains one on the entries already stored in L2.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import r1mw
from r1mw.cli import check_numbers
from r1mw.codec import Lz4Codec, MsgpackCodec, ZstdCodec, decode, pack
from r1mw.tiers import DiskTier
from r1mw.zstd_dict import AutoDictZstdCodec, DictionaryDir

DICT_NAME = "zstd.dict"


def _dict_path(settings: r1mw.Settings) -> Path:
    return settings.zstd_dict or settings.cache_path / DICT_NAME


def _dicts_dir(settings: r1mw.Settings) -> Path:
    return settings.zstd_dict_dir or settings.cache_path / "zstd-dicts"


def _readers(pipeline: r1mw.Pipeline) -> None:
    # Whatever codec writes, entries written with a trained dictionary (by another process,
    # or before R1MW_CODEC changed) stay readable: their dictionaries are found by id here.
    DictionaryDir(_dicts_dir(pipeline.settings))


def _auto(pipeline: r1mw.Pipeline) -> AutoDictZstdCodec:
    s = pipeline.settings
    return AutoDictZstdCodec(_dicts_dir(s), s.compression_threshold, train_after=s.zstd_train_after,
                             keep=s.zstd_dicts_kept)


def _msgpack(pipeline: r1mw.Pipeline) -> MsgpackCodec:
    _readers(pipeline)
    return MsgpackCodec(pipeline.settings.compression_threshold)


def _lz4(pipeline: r1mw.Pipeline) -> Lz4Codec:
    _readers(pipeline)
    return Lz4Codec(pipeline.settings.compression_threshold)


def _zstd(pipeline: r1mw.Pipeline) -> ZstdCodec:
    s = pipeline.settings
    _readers(pipeline)
    path = _dict_path(s)
    dictionary = None
    if path.is_file():
        dictionary = path.read_bytes()
    elif s.zstd_dict is not None:
        raise r1mw.ConfigError(f"R1MW_ZSTD_DICT={str(s.zstd_dict)!r} is invalid: expected an existing file")
    return ZstdCodec(s.compression_threshold, dictionary=dictionary)


@r1mw.hookimpl
def r1mw_register_codecs() -> dict[str, Callable[[r1mw.Pipeline], r1mw.Codec]]:
    return {
        "msgpack+zstd+dict": _auto,
        "msgpack+lz4": _lz4,
        "msgpack+zstd": _zstd,
        "msgpack": _msgpack,
    }


def _decoders(settings: r1mw.Settings) -> None:
    """Make every format this module's codecs write readable in this process, as building the
    codecs of a pipeline would: zstd frames (with R1MW_ZSTD_DICT's dictionary, if any) and
    entries of trained dictionaries (found by id in the dictionaries' directory)."""
    DictionaryDir(_dicts_dir(settings))
    path = _dict_path(settings)
    ZstdCodec(settings.compression_threshold, dictionary=path.read_bytes() if path.is_file() else None)


def _train(args: argparse.Namespace) -> int:
    # Fewer than 20 samples can never train (below); zstd refuses a dictionary under 256 bytes.
    check_numbers(args, {"samples": (lambda v: v >= 20, "an integer >= 20"),
                         "size": (lambda v: v >= 256, "a number of bytes >= 256")})
    settings = r1mw.Settings.from_env()
    directory = Path(args.dir) if args.dir else settings.tier_dir("l2")
    if not directory.is_dir():
        raise r1mw.ConfigError(f"--dir={str(directory)!r} is invalid: expected the L2 directory")
    # A command builds no pipeline: without this, an L2 written with the default codec
    # (zstd, then zstd with trained dictionaries) reads as "0 readable entries".
    _decoders(settings)
    tier = DiskTier(directory, max_entries=0, rescan_every=0)
    samples = []
    for blob in tier.sample(args.samples):
        try:
            samples.append(pack(decode(blob)))
        except r1mw.CodecError:
            continue
    if len(samples) < 20:
        print(f"r1mw: only {len(samples)} readable entries in {directory}: need at least 20 to train")
        return 1
    dictionary = ZstdCodec.train(samples, args.size)
    out = Path(args.out) if args.out else _dict_path(settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".tmp-dict-")
    with os.fdopen(fd, "wb") as f:
        f.write(dictionary)
    os.replace(tmp, out)
    print(f"trained a {len(dictionary):,}-byte zstd dictionary on {len(samples)} entries -> {out}")
    print("use it with R1MW_CODEC=msgpack+zstd (entries written before stay readable)")
    # The default codec (msgpack+zstd+dict) takes the newest dictionary of its directory at start.
    dicts = DictionaryDir(_dicts_dir(settings))
    dict_id = dicts.save(dictionary)
    dicts.prune(settings.zstd_dicts_kept, protect=dict_id)
    print(f"and as {dicts.path(dict_id)}: msgpack+zstd+dict pipelines started from now on write with it")
    return 0


@r1mw.hookimpl
def r1mw_pipeline_started(pipeline: r1mw.Pipeline) -> None:
    """No dictionary yet, but L2 already holds enough entries (written by processes that each
    stored fewer than R1MW_ZSTD_TRAIN_AFTER): train on them now, in the background."""
    store = pipeline.store
    codec = store.codec if store is not None else None
    if store is None or not isinstance(codec, AutoDictZstdCodec) or codec.dict_id or not codec.train_after:
        return
    disk = next((t for t in store.tiers if isinstance(t, DiskTier)), None)
    if disk is None or len(disk) < codec.train_after:
        return
    samples = []
    # Bounded: at most 400 entries read and decoded once at start-up (a few milliseconds).
    for blob in disk.sample(400):
        try:
            samples.append(pack(decode(blob)))
        except r1mw.CodecError:
            continue
    codec.train_on(samples)


@r1mw.hookimpl
def r1mw_add_cli_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("zstd-dict", help="train a zstd dictionary on the entries stored in L2")
    p.add_argument("--dir", help="L2 directory (default: R1MW_L2_DIR or <cache dir>/l2)")
    p.add_argument("--out", help="dictionary file (default: R1MW_ZSTD_DICT or <cache dir>/zstd.dict)")
    p.add_argument("--samples", type=int, default=2000, help="entries to train on (default 2000)")
    p.add_argument("--size", type=int, default=64 * 1024, help="dictionary bytes (default 64 KiB)")
    p.set_defaults(func=_train)
