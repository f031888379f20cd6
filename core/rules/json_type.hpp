// The name of a JSON value's type as failure reasons say it ("got array").
// Internal (not installed): shared by the rules library, the outbox writer
// and `cdcflow produce`, so that every reason names types the same way.
#pragma once

#include <cdcflow/plugin.h>
#include <simdjson.h>

#include <cstdint>

namespace cdcflow::rules {

inline const char *json_type_name(simdjson::dom::element_type t) {
    using T = simdjson::dom::element_type;
    switch (t) {
    case T::ARRAY:
        return "array";
    case T::OBJECT:
        return "object";
    case T::INT64:
    case T::UINT64:
    case T::DOUBLE:
        return "number";
    case T::STRING:
        return "string";
    case T::BOOL:
        return "boolean";
    case T::NULL_VALUE:
        return "null";
    }
    return "value";
}

// The same names for the host's parse (cdcflow_json_type, plugin.h).
inline const char *json_type_name(int32_t cdcflow_json_type_value) {
    switch (cdcflow_json_type_value) {
    case CDCFLOW_JSON_ARRAY:
        return "array";
    case CDCFLOW_JSON_OBJECT:
        return "object";
    case CDCFLOW_JSON_NUMBER:
        return "number";
    case CDCFLOW_JSON_STRING:
        return "string";
    case CDCFLOW_JSON_BOOL:
        return "boolean";
    case CDCFLOW_JSON_NULL:
        return "null";
    }
    return "value";
}

} // namespace cdcflow::rules
