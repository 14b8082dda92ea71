"""headforge.heads"""
