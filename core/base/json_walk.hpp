// Reading a JSON value to its end with simdjson's On-Demand API, so that
// malformed JSON anywhere inside it is seen: On-Demand checks only what it is
// asked to read, and both the host's shared payload parse (core/src/
// payload.cpp) and the projection sink's own parse (when it runs without the
// host's) must refuse what a DOM parser refuses.
//
// Internal (not installed). Thread-safety: pure function.
#pragma once

#include <simdjson.h>

#include <string_view>

namespace cdcflow::base {

// Nesting deeper than this is refused (simdjson's DOM default): On-Demand
// sets no bound itself, and the walk recurses once per level.
inline constexpr int kMaxJsonDepth = 1024;

// Reads `v`, which sits at nesting level `depth` (a document's root is 1),
// and everything in it. SUCCESS, or the first error (DEPTH_ERROR past
// kMaxJsonDepth).
template <typename V> simdjson::error_code walk_json(V &&v, int depth) {
    namespace od = simdjson::ondemand;
    if (depth > kMaxJsonDepth) return simdjson::DEPTH_ERROR;
    od::json_type t;
    if (auto err = v.type().get(t)) return err;
    switch (t) {
    case od::json_type::array: {
        od::array a;
        if (auto err = v.get_array().get(a)) return err;
        for (auto item : a) {
            od::value x;
            if (auto err = item.get(x)) return err;
            if (auto err = walk_json(x, depth + 1)) return err;
        }
        return simdjson::SUCCESS;
    }
    case od::json_type::object: {
        od::object o;
        if (auto err = v.get_object().get(o)) return err;
        for (auto field : o) {
            if (auto err = field.error()) return err;
            std::string_view key;
            if (auto err = field.unescaped_key().get(key)) return err;
            if (auto err = walk_json(field.value(), depth + 1)) return err;
        }
        return simdjson::SUCCESS;
    }
    case od::json_type::number: {
        od::number n;
        return v.get_number().get(n);
    }
    case od::json_type::string: {
        std::string_view s;
        return v.get_string().get(s);
    }
    case od::json_type::boolean: {
        bool b;
        return v.get_bool().get(b);
    }
    case od::json_type::null: {
        bool is_null = false;
        if (auto err = v.is_null().get(is_null)) return err;
        return is_null ? simdjson::SUCCESS : simdjson::N_ATOM_ERROR;
    }
    }
    return simdjson::TAPE_ERROR;
}

} // namespace cdcflow::base
