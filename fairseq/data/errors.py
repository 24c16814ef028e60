"""The error raised for unusable data files: it names the file, what is wrong and the fix."""


class DataError(ValueError):
    """A data file (dictionary, index, binary data) that cannot be used as it is."""
