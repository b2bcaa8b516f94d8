"""Where the tests find the repository and their data files, wherever in ``tests/`` the test module sits."""

from pathlib import Path

#: The repository root (the working directory of the commands the tests start).
REPO = Path(__file__).resolve().parent.parent
#: Small input files in their published formats (``tests/fixtures/...``).
FIXTURES = REPO / "tests" / "fixtures"
