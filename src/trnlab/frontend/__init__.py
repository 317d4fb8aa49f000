"""Pieces shared by both NKI front ends: kernel objects, op names, the launch machinery."""
