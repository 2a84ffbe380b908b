"""Volume/Surface dataclasses and their readers/writers (NIfTI, MGZ, GIfTI, FreeSurfer)."""

from brainsynth.io.atomic import (
    atomic_path,
    read_tsv,
    write_bytes_atomic,
    write_text_atomic,
    write_tsv_atomic,
)
from brainsynth.io.surface import Surface, read_surface, validate_mesh, write_surface
from brainsynth.io.volume import Volume, read_volume, write_volume

__all__ = [
    "Surface",
    "Volume",
    "atomic_path",
    "read_tsv",
    "read_surface",
    "read_volume",
    "validate_mesh",
    "write_bytes_atomic",
    "write_surface",
    "write_text_atomic",
    "write_tsv_atomic",
    "write_volume",
]
