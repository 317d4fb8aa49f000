"""trnlab: an open lab for Trainium-class AI chips."""
__version__ = "0.1.0"
