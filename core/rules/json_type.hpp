// The name of a JSON value's type as failure reasons say it ("got array").
// Internal (not installed): shared by the rules library, the outbox writer
// and `cdcflow produce`, so that every reason names types the same way.
#pragma once

#include <simdjson.h>

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

} // namespace cdcflow::rules
