"""headforge.apps"""
