"""headforge.data"""
