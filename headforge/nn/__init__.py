"""headforge.nn"""
