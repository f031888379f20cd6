#include "yaml_prescan.hpp"

#include "base/utf8.hpp"
#include "escape.hpp"
#include "yaml_load.hpp"

#include <algorithm>
#include <vector>

namespace cdcflow::host {

void check_text(std::string_view text) {
    if (text.size() > kMaxFileBytes) fail({1, 1}, "file too large (the limit is 4 MiB)");
    Mark m{1, 1};
    for (size_t i = 0; i < text.size(); ++m.col) {
        auto c = static_cast<unsigned char>(text[i]);
        if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7F)
            fail(m, "control character " + hex(c) + " (a binary file?)");
        size_t n = base::utf8_length(text, i);
        if (n == 0) fail(m, "invalid UTF-8 byte " + hex(c) + " (a binary file?)");
        if (c == '\n') m = {m.line + 1, 0};
        i += n;
    }
}

namespace {

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\r';
}

// After "|" or ">": only chomping / indentation indicators and a comment.
bool block_scalar_header(std::string_view rest) {
    size_t j = rest.find_first_not_of("+-0123456789 \t\r");
    return j == npos || rest[j] == '#';
}

} // namespace

// yaml-cpp recurses once per nesting level while parsing and spends about half a
// kilobyte per node, so both are bounded before it sees the text.
//
// Nodes: every node needs an indicator or a line of its own, so these are counted
// everywhere, strings and comments included (erring high is harmless).
//
// Depth: every flow bracket, every deeper block indentation and every compact "- " /
// "? " counts as a level. Quotes, comments and block scalars are skipped as YAML does,
// so that brackets inside strings do not count. Where this model and yaml-cpp disagree
// (odd plain scalars), yaml-cpp's own recursion limit and the walk's depth check remain.
void prescan(std::string_view text) {
    size_t tokens = std::count_if(text.begin(), text.end(),
                                  [](char c) { return std::string_view("\n,:[{-?").find(c) != npos; });
    if (tokens > kMaxTokens) fail({1, 1}, "document too large (more than 200000 YAML indicators)");

    std::vector<size_t> indents; // columns of the open block levels
    size_t flow = 0;             // open flow brackets
    char quote = 0;              // inside a quoted scalar that goes on past the line's end
    size_t block_text = npos;    // inside a block scalar: lines indented deeper than this
    int line_no = 0;
    for (size_t start = 0; start < text.size();) {
        size_t end = std::min(text.find('\n', start), text.size());
        std::string_view line = text.substr(start, end - start);
        start = end + 1;
        ++line_no;
        auto deeper = [&](size_t col) {
            if (indents.size() + flow > kMaxDepth)
                fail({line_no, static_cast<int>(col) + 1}, "nesting deeper than 200 levels");
        };
        size_t i = line.find_first_not_of(' ');
        size_t content = line.find_first_not_of(" \t\r");
        if (block_text != npos) {
            if (content == npos || i > block_text) continue;
            block_text = npos;
        }
        bool token = true; // at the start of a token: a quote, bracket or indicator opens something
        if (quote) {
            i = 0;
        } else if (content == npos || line[content] == '#') {
            continue;
        } else if (flow == 0) { // flow collections ignore indentation
            while (!indents.empty() && indents.back() >= i)
                indents.pop_back();
            indents.push_back(i);
            deeper(i);
            if (i == 0 && (line.starts_with("---") || line.starts_with("...")) &&
                (line.size() == 3 || is_space(line[3])))
                i = 3;
        }
        for (; i < line.size(); ++i) {
            char c = line[i];
            if (quote) {
                if (c == '\\' && quote == '"')
                    ++i;
                else if (c == '\'' && quote == '\'' && i + 1 < line.size() && line[i + 1] == '\'')
                    ++i;
                else if (c == quote)
                    quote = 0, token = false;
                continue;
            }
            if (is_space(c)) continue;
            if (c == '#' && (i == 0 || is_space(line[i - 1]))) break;
            bool spaced = i + 1 == line.size() || is_space(line[i + 1]);
            if (token && (c == '"' || c == '\'')) {
                quote = c;
            } else if ((c == '[' || c == '{') && (token || flow > 0)) {
                ++flow;
                deeper(i);
                token = true;
            } else if ((c == ']' || c == '}') && flow > 0) {
                --flow;
                token = false;
            } else if ((c == ':' && (spaced || flow > 0)) || (c == ',' && flow > 0)) {
                token = true;
            } else if ((c == '-' || c == '?') && spaced && token && flow == 0) {
                size_t j = line.find_first_not_of(" \t\r", i + 1);
                if (j != npos && line[j] != '#') {
                    indents.push_back(j);
                    deeper(j);
                }
            } else if (token && (c == '&' || c == '!' || c == '*')) {
                // An anchor, tag or alias: what follows it still starts a node.
                while (i + 1 < line.size() && !is_space(line[i + 1]) &&
                       std::string_view(",[]{}").find(line[i + 1]) == npos)
                    ++i;
            } else if (token && flow == 0 && (c == '|' || c == '>') &&
                       block_scalar_header(line.substr(i + 1))) {
                // "- |" pushed the scalar's own column: its content belongs to the level before.
                bool compact = indents.size() > 1 && indents.back() == i;
                block_text = indents.empty() ? 0 : indents[indents.size() - (compact ? 2 : 1)];
                break;
            } else {
                token = false;
            }
        }
    }
}

} // namespace cdcflow::host
