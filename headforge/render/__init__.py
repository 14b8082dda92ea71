"""headforge.render"""
