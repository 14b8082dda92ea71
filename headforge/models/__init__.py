"""headforge.models"""
