"""headforge.training"""
