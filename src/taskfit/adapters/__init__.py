"""Adapter folders from `taskfit tune`, shared by the models that run them and the tuning that makes them."""
