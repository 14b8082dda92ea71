"""headforge.preprocess"""
