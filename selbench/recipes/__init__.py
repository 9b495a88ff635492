"""Recipes: named TOML files (shipped here as package data) that configure every stage of a run."""
