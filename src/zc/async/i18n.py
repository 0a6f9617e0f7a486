"""The message factory of the ``zc.async`` translation domain."""
import zope.i18nmessageid

MessageFactory = _ = zope.i18nmessageid.MessageFactory('zc.async')
