"""FVEAutoUnlock values from a Windows SYSTEM registry hive (optional: ``bdekit[registry]``).

An operating system keeps, for every fixed data drive that unlocks automatically, the REG_BINARY
value ``Data`` under ``ControlSetNNN\\Control\\FVEAutoUnlock\\{GUID}`` of its SYSTEM hive
(``Windows\\System32\\config\\SYSTEM``; ``CurrentControlSet`` is a link that exists only on a
running system, so every ``ControlSetNNN`` of the file is read). The hive is parsed with
`regipy <https://pypi.org/project/regipy/>`_, a maintained registry parser; without it the
option is refused with the install hint (exit 5). Each value is parsed strictly
(:func:`bdekit.format.autounlock.parse_data_value`); identical values in several control sets
count once. Values that are not of the known layout are skipped with a warning, and refused
only when no value is usable.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType
from typing import Any

from bdekit.errors import BdeError, FormatError, MissingKeyError, UnsupportedError, UsageError
from bdekit.format.autounlock import REGISTRY_PATH, AutoUnlockData, parse_data_value

log = logging.getLogger(__name__)


def _regipy(path: str) -> tuple[ModuleType, ModuleType]:
    """regipy's ``registry`` and ``exceptions`` modules, or the install hint (exit 5)."""
    try:
        return (importlib.import_module("regipy.registry"),
                importlib.import_module("regipy.exceptions"))
    except ImportError:
        raise UnsupportedError("reading a registry hive needs regipy: pip install "
                               "'bdekit[registry]' (or give the value with --auto-unlock-data)",
                               path=path) from None


def _open_hive(path: str) -> Any:
    registry, _exceptions = _regipy(path)
    if not os.path.isfile(path):
        raise UsageError("no such registry hive file", path=path)
    try:
        return registry.RegistryHive(path)
    except Exception as exc:  # noqa: BLE001 - regipy raises many kinds on a damaged file
        raise FormatError(f"not a readable registry hive (regf): {exc}", path=path,
                          offset=0) from None


def _control_sets(hive: Any) -> list[str]:
    return sorted(sub.name for sub in hive.root.iter_subkeys()
                  if sub.name.lower().startswith("controlset"))


def _values_of(hive: Any, control_set: str, path: str) -> list[tuple[str, bytes]]:
    """(where, bytes) of every ``Data`` value under this control set's FVEAutoUnlock key."""
    regipy_error = _regipy(path)[1].RegipyException
    key_path = f"\\{control_set}\\{REGISTRY_PATH}"
    try:
        key = hive.get_key(key_path)
        subkeys = list(key.iter_subkeys())
    except regipy_error:
        return []
    out: list[tuple[str, bytes]] = []
    for sub in subkeys:
        try:
            values = list(sub.iter_values(trim_values=False))
        except regipy_error as exc:
            log.warning("%s: cannot read the values of %s\\%s: %s", path, key_path, sub.name, exc)
            continue
        for value in values:
            if value.name == "Data" and isinstance(value.value, bytes | bytearray):
                out.append((f"{path}: {key_path[1:]}\\{sub.name}\\Data", bytes(value.value)))
    return out


def read_auto_unlock_values(path: str | os.PathLike[str]) -> list[AutoUnlockData]:
    """The FVEAutoUnlock ``Data`` values of the SYSTEM hive at ``path`` (module docstring).

    Raises :class:`MissingKeyError` when the hive has none, the refusal of the first value when
    none has the known layout.
    """
    spath = os.fspath(path)
    hive = _open_hive(spath)
    seen: set[bytes] = set()
    parsed: list[AutoUnlockData] = []
    refused: list[BdeError] = []
    try:
        control_sets = _control_sets(hive)
    except Exception as exc:  # noqa: BLE001 - a damaged hive
        raise FormatError(f"cannot list the registry hive's root key: {exc}", path=spath) from None
    for control_set in control_sets:
        for where, data in _values_of(hive, control_set, spath):
            if data in seen:
                continue
            seen.add(data)
            try:
                parsed.append(parse_data_value(data, where))
            except BdeError as exc:
                log.warning("%s", exc.message)
                refused.append(exc)
    if not parsed and refused:
        raise refused[0]
    if not parsed:
        raise MissingKeyError(f"no FVEAutoUnlock value in this hive (looked under "
                              f"{', '.join(control_sets) or 'no ControlSet key'}\\"
                              f"{REGISTRY_PATH}): no data volume was set to unlock "
                              "automatically, or it is not a SYSTEM hive", path=spath)
    log.info("%s: %d FVEAutoUnlock values", spath, len(parsed))
    return parsed


__all__ = ["read_auto_unlock_values"]
