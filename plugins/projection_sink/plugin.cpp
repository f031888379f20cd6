// The plugin's one exported symbol. Kept apart from the classes so that unit
// tests can compile them without a second cdcflow_plugin_entry.
#include "projection_sink.hpp"

CDCFLOW_PLUGIN(cdcflow::projection::ProjectionSink)
