"""The built-in procedural head model (our own geometry, Apache-2.0)."""

from headforge.heads.procedural.expressions import EXPRESSION_NAMES
from headforge.heads.procedural.model import ProceduralHeadModel
from headforge.heads.procedural.regions import REGION_GROUPS, REGION_NAMES
from headforge.heads.procedural.shape_components import SHAPE_NAMES

__all__ = ["ProceduralHeadModel", "SHAPE_NAMES", "EXPRESSION_NAMES", "REGION_NAMES", "REGION_GROUPS"]
