"""A Grok application that estimates pi in the background with zc.async."""
