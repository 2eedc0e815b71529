"""1:N screening: an in-memory index of the enrolled templates (faiss), kept in step with the
reference store, and the policies that use it (duplicate enrolment, impersonation).

The index holds enrolled reference templates (never probe data) with the keyed hash of
their identity, in memory only: it is rebuilt from the encrypted store at every start
and never written to disk.
"""

from idv.gallery.index import Gallery, GalleryConfig, Match
from idv.gallery.screening import Screening, ScreeningPolicy
from idv.gallery.sync import GallerySync

__all__ = ["Gallery", "GalleryConfig", "GallerySync", "Match", "Screening", "ScreeningPolicy"]
