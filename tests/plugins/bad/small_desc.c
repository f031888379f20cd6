/* A plugin whose descriptor claims 16 bytes (a hand-written descriptor with
 * a wrong struct_size): refused, saying how many bytes were expected. */
#include <cdcflow/plugin.h>

static const cdcflow_plugin desc = {.abi_version = CDCFLOW_ABI_VERSION,
                                    .struct_size = 16,
                                    .name = "small_desc",
                                    .kind = CDCFLOW_KIND_TRANSFORM,
                                    .version = "0",
                                    .description = "descriptor with a wrong struct_size"};

CDCFLOW_EXPORT const cdcflow_plugin *cdcflow_plugin_entry(void) {
    return &desc;
}
