"""neus_stage: photos of an object -> NeuS dataset -> neural implicit surface -> evaluated mesh."""

__version__ = "0.1.0"
