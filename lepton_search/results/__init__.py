"""Reading a study back: records -> DataFrames (`frame`), picking (`pick`), plots and tables (`report`, `html`),
deployable exports (`card`, `release`), dashboard notes (`notes`) and re-scoring on another target (`retarget`).

Nothing here runs a search; `lepton_search.api` joins the two.
"""

from lepton_search.results.frame import StudyFrame
from lepton_search.results.result import SearchResult

__all__ = ["SearchResult", "StudyFrame"]
