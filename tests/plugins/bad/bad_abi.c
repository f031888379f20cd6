/* A plugin built for an ABI this host does not support (version 999). */
#include <cdcflow/plugin.h>

static const cdcflow_plugin desc = {999u, sizeof(cdcflow_plugin), "bad_abi", CDCFLOW_KIND_TRANSFORM,
                                    "0", "built for ABI 999", 0, 0, 0, 0};

CDCFLOW_EXPORT const cdcflow_plugin *cdcflow_plugin_entry(void) { return &desc; }
