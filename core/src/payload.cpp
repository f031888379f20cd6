#include "payload.hpp"

#include "base/json_walk.hpp"

#include <simdjson.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <new>
#include <string_view>
#include <vector>

namespace cdcflow::host {

namespace od = simdjson::ondemand;

namespace {

// A padded copy of the payload (the arena promises no padding) and the
// parser, per thread: stages call event_payload from their own threads.
struct ThreadParser {
    od::parser parser;
    std::vector<char> buf;
    std::vector<cdcflow_json_field> fields;
};

// Above this, the copy buffer is released after the parse, so one huge
// payload does not pin its size in every stage thread forever.
constexpr size_t kKeepBufferBytes = 1 << 20;

cdcflow_json_type type_of(od::json_type t) {
    switch (t) {
    case od::json_type::array:
        return CDCFLOW_JSON_ARRAY;
    case od::json_type::object:
        return CDCFLOW_JSON_OBJECT;
    case od::json_type::number:
        return CDCFLOW_JSON_NUMBER;
    case od::json_type::string:
        return CDCFLOW_JSON_STRING;
    case od::json_type::boolean:
        return CDCFLOW_JSON_BOOL;
    case od::json_type::null:
        return CDCFLOW_JSON_NULL;
    }
    return CDCFLOW_JSON_NULL;
}

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// The parse itself; fills r (fields in tp.fields, spans into tp.buf) or
// returns the error that makes the payload invalid.
simdjson::error_code parse(ThreadParser &tp, size_t len, cdcflow_payload &r) {
    od::document doc;
    if (auto err = tp.parser.iterate(tp.buf.data(), len, tp.buf.size()).get(doc)) return err;
    od::json_type t;
    if (auto err = doc.type().get(t)) return err;
    r.root_type = type_of(t);
    if (t != od::json_type::object) {
        // Still the whole text must be JSON to be "valid, not an object".
        if (t == od::json_type::array) {
            od::array a;
            if (auto err = doc.get_array().get(a)) return err;
            for (auto item : a) {
                od::value x;
                if (auto err = item.get(x)) return err;
                if (auto err = base::walk_json(x, 2)) return err;
            }
        } else if (auto err = base::walk_json(doc, 1)) {
            return err;
        }
        if (doc.current_location().error() != simdjson::OUT_OF_BOUNDS) return simdjson::TRAILING_CONTENT;
        r.result = CDCFLOW_PAYLOAD_NOT_OBJECT;
        return simdjson::SUCCESS;
    }
    od::object obj;
    if (auto err = doc.get_object().get(obj)) return err;
    tp.fields.clear();
    for (auto field : obj) {
        if (auto err = field.error()) return err;
        // A key without escapes is its own text: a span of the payload like
        // the values (event_payload maps it back), neither unescaped into
        // the parser nor copied into the batch. Only a key with a backslash
        // is unescaped (and copied).
        std::string_view key;
        od::raw_json_string raw_key;
        if (auto err = field.key().get(raw_key)) return err;
        const char *raw = raw_key.raw(); // after the opening quote; a quote ends it
        const char *close =
            static_cast<const char *>(std::memchr(raw, '"', static_cast<size_t>(tp.buf.data() + len - raw)));
        if (close && !std::memchr(raw, '\\', static_cast<size_t>(close - raw)))
            key = std::string_view(raw, static_cast<size_t>(close - raw));
        else if (auto err = field.unescaped_key().get(key))
            return err;
        od::value v;
        if (auto err = field.value().get(v)) return err;
        od::json_type vt;
        if (auto err = v.type().get(vt)) return err;
        // A scalar's token runs to the next token (trailing blanks
        // included); a container ends where the walk over it stopped, at
        // the next token (',' or '}'). (simdjson 3.0's get_number does not
        // move the location on, so scalars cannot use the location.)
        std::string_view token = v.raw_json_token();
        const char *start = token.data();
        const char *end = start + token.size();
        if (auto err = base::walk_json(v, 2)) return err;
        if (vt == od::json_type::object || vt == od::json_type::array) {
            if (auto err = doc.current_location().get(end))
                return err == simdjson::OUT_OF_BOUNDS ? simdjson::TAPE_ERROR : err;
        }
        while (end > start && is_space(end[-1]))
            --end;
        cdcflow_json_field f{};
        // A plain key is a span of tp.buf, an unescaped one of the parser's
        // buffer: event_payload maps the first and copies the second.
        f.key = cdcflow_str{key.data(), key.size()};
        f.value = cdcflow_str{start, static_cast<uint64_t>(end - start)};
        f.type = type_of(vt);
        f.has_escape =
            vt == od::json_type::string && std::memchr(start, '\\', size_t(end - start)) != nullptr;
        tp.fields.push_back(f);
    }
    // At the end of the document the location is out of bounds; anything
    // else is trailing content ("{} x").
    if (doc.current_location().error() != simdjson::OUT_OF_BOUNDS) return simdjson::TRAILING_CONTENT;
    r.result = CDCFLOW_PAYLOAD_OBJECT;
    return simdjson::SUCCESS;
}

const char *error_text(Batch &b, simdjson::error_code err) {
    std::string_view prefix = "payload is not valid JSON: ";
    std::string_view why =
        err == simdjson::TRAILING_CONTENT ? "content after the value" : simdjson::error_message(err);
    char *p = static_cast<char *>(b.arena.alloc(prefix.size() + why.size() + 1, 1));
    std::memcpy(p, prefix.data(), prefix.size());
    std::memcpy(p + prefix.size(), why.data(), why.size());
    p[prefix.size() + why.size()] = '\0';
    return p;
}

} // namespace

cdcflow_status event_payload(Batch &b, uint32_t index, cdcflow_payload *out) {
    if (!out || out->struct_size < offsetof(cdcflow_payload, result) + sizeof(out->result))
        return CDCFLOW_ERR_INTERNAL;
    if (index >= b.count) return CDCFLOW_ERR_NOT_FOUND;
    try {
        if (b.parsed.size() < b.count) b.make_parsed_slots();
        Batch::Parsed &slot = b.parsed[index];
        const cdcflow_str payload = b.events[index].payload;
        if (slot.generation != b.generation || slot.of.data != payload.data || slot.of.len != payload.len) {
            thread_local ThreadParser tp;
            const size_t len = static_cast<size_t>(payload.len);
            if (tp.buf.size() > kKeepBufferBytes && len <= kKeepBufferBytes) {
                std::vector<char>().swap(tp.buf);
                tp.parser = od::parser();
            }
            if (tp.buf.size() < len + simdjson::SIMDJSON_PADDING)
                tp.buf.resize(len + simdjson::SIMDJSON_PADDING);
            if (len) std::memcpy(tp.buf.data(), payload.data, len);
            std::memset(tp.buf.data() + len, 0, simdjson::SIMDJSON_PADDING);

            cdcflow_payload r{};
            r.struct_size = sizeof r;
            r.field_stride = sizeof(cdcflow_json_field);
            if (auto err = parse(tp, len, r)) {
                r = cdcflow_payload{};
                r.struct_size = sizeof r;
                r.field_stride = sizeof(cdcflow_json_field);
                r.result = CDCFLOW_PAYLOAD_INVALID;
                r.error = error_text(b, err);
            } else if (r.result == CDCFLOW_PAYLOAD_OBJECT) {
                // Into the batch: values and plain keys as spans of the
                // event's own payload, unescaped keys copied (they are in
                // the parser's buffer).
                auto *fields = static_cast<cdcflow_json_field *>(
                    b.arena.alloc(sizeof(cdcflow_json_field) * std::max<size_t>(tp.fields.size(), 1),
                                  alignof(cdcflow_json_field)));
                for (size_t k = 0; k < tp.fields.size(); ++k) {
                    cdcflow_json_field f = tp.fields[k];
                    f.value.data = payload.data + (f.value.data - tp.buf.data());
                    // std::less: a total order even between unrelated
                    // buffers (the parser's, for an unescaped key).
                    const std::less<const char *> before;
                    if (!before(f.key.data, tp.buf.data()) && before(f.key.data, tp.buf.data() + len))
                        f.key.data = payload.data + (f.key.data - tp.buf.data());
                    else
                        f.key = b.arena.copy(f.key);
                    fields[k] = f;
                }
                r.fields = fields;
                r.field_count = static_cast<uint32_t>(tp.fields.size());
            }
            slot.payload = r;
            slot.of = payload;
            slot.generation = b.generation;
        }
        std::memcpy(out, &slot.payload, std::min<size_t>(out->struct_size, sizeof(cdcflow_payload)));
        out->struct_size = std::min<uint32_t>(out->struct_size, sizeof(cdcflow_payload));
        return CDCFLOW_OK;
    } catch (const std::bad_alloc &) {
        return CDCFLOW_ERR_NOMEM;
    }
}

} // namespace cdcflow::host
