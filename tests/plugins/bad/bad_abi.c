/* A plugin built for an ABI this host does not support (version 999). */
#include <cdcflow/plugin.h>

static const cdcflow_plugin desc = {.abi_version = 999u,
                                    .struct_size = sizeof(cdcflow_plugin),
                                    .name = "bad_abi",
                                    .kind = CDCFLOW_KIND_TRANSFORM,
                                    .version = "0",
                                    .description = "built for ABI 999"};

CDCFLOW_EXPORT const cdcflow_plugin *cdcflow_plugin_entry(void) {
    return &desc;
}
