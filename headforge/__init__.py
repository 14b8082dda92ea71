"""headforge: 3D-aware generative models of animatable and relightable human heads."""

__version__ = "0.1.0"
