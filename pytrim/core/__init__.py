"""The foundation every other package stands on: the errors a user is told about in one
line (`errors`), files that are never half-written and outputs that never clobber an input
(`files`), and the one way a child process runs (`runner`).

Layer: the lowest; it imports nothing of pytrim.
"""
