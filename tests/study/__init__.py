"""Tests of `supportkit study`."""
