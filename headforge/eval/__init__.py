"""headforge.eval"""
