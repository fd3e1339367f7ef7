"""Voice calls in the control plane: admission (routing, the pinned published version, who pays), the call
session around whatever answers (metering, the conversation record), and the records themselves."""
