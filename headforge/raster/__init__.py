"""headforge.raster"""
