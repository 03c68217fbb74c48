-- rest_guard.lua: checks each REST request before the gRPC-JSON transcoder.
--
-- Runs in Envoy's Lua filter after the generated table API (rest_api.lua,
-- from the descriptor by scripts/gen_proto.py). The transcoder drops unknown
-- JSON fields and takes "true" for true, so a typo would run with a default;
-- it also answers unknown paths and wrong methods alike. Here:
--   * no REST method at the path: 404; the path exists for other methods: 405
--     with Allow;
--   * path and query parameters must be fields of the request, of their type;
--   * the body must be strict JSON (RFC 8259, UTF-8), a top-level object whose
--     keys are fields of the request (proto or lowerCamelCase name, once
--     each) with values of the field's JSON type.
-- Rejections are local replies with a plain-text message; local_reply_config
-- wraps them as {"code", "message", "details"}. Messages quote input only
-- when it is short printable ASCII, so random bytes are never echoed.
-- Native gRPC (content-type application/grpc*) passes untouched.

local byte, char, find, sub, format = string.byte, string.char, string.find, string.sub, string.format
local concat, sort = table.concat, table.sort

local MAX_DEPTH = 64 -- nesting allowed in a body; protobuf's own parser stops at 100
local SHOW_MAX = 40 -- longest value quoted back in a message
local SHOW_PATH_MAX = 120 -- longest path quoted back

-- Lookups built once per Lua state (per Envoy worker) from API.
local FIELDS = {} -- message name -> {by_name = {name|json -> spec}, names = {proto names}}
for message, specs in pairs(API.messages) do
  local by_name, names = {}, {}
  for _, spec in ipairs(specs) do
    by_name[spec.name] = spec
    by_name[spec.json] = spec
    names[#names + 1] = spec.name
  end
  FIELDS[message] = {by_name = by_name, names = names}
  for _, spec in ipairs(specs) do
    if spec.repeated then -- what each element of the array must be
      spec.item = {type = spec.type, enum = spec.enum, message = spec.message}
    end
  end
end
local ENUMS = {}
for enum, values in pairs(API.enums) do
  local set = {}
  for _, v in ipairs(values) do set[v] = true end
  ENUMS[enum] = set
end

-- A rejection travels as an error value: {status, message[, allow]}.
local Reject = {}
local function reject(status, message, allow)
  error(setmetatable({status = status, message = message, allow = allow}, Reject), 0)
end

-- Input is quoted back only when short printable ASCII.
local function printable(s, max)
  return #s <= (max or SHOW_MAX) and not find(s, "[^ -~]")
end
local function bytes(n)
  return n == 1 and "1 byte" or format("%d bytes", n)
end
local function quoted_name(s)
  if #s <= 64 and find(s, "^[%w_.%-]+$") then return '"' .. s .. '"' end
  return format("(a name of %s, not shown)", bytes(#s))
end

---------------------------------------------------------------------------
-- UTF-8 (RFC 3629: no overlong forms, no surrogates, at most U+10FFFF)

local function utf8_error(s)
  local i, n = 1, #s
  while true do
    i = find(s, "[\128-\255]", i)
    if not i then return nil end
    local c, c2, c3, c4 = byte(s, i, i + 3)
    local len
    if c >= 0xC2 and c <= 0xDF then
      len = 2
    elseif c >= 0xE0 and c <= 0xEF then
      len = 3
      local lo = (c == 0xE0) and 0xA0 or 0x80
      local hi = (c == 0xED) and 0x9F or 0xBF
      if not c2 or c2 < lo or c2 > hi then return i end
      c2 = 0x80
    elseif c >= 0xF0 and c <= 0xF4 then
      len = 4
      local lo = (c == 0xF0) and 0x90 or 0x80
      local hi = (c == 0xF4) and 0x8F or 0xBF
      if not c2 or c2 < lo or c2 > hi then return i end
      c2 = 0x80
    else
      return i
    end
    if i + len - 1 > n then return i end
    for k, b in ipairs({c2, c3, c4}) do
      if k < len and (b < 0x80 or b > 0xBF) then return i end
    end
    i = i + len
  end
end

local function utf8_char(cp)
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then return char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40) end
  if cp < 0x10000 then
    return char(0xE0 + math.floor(cp / 0x1000), 0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return char(0xF0 + math.floor(cp / 0x40000), 0x80 + math.floor(cp / 0x1000) % 0x40,
              0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

---------------------------------------------------------------------------
-- Strict JSON. Values become nodes {kind, raw (numbers, literals), str and
-- src/first/last (strings), items (arrays), members (objects: {key, node})}.
-- Byte loops rather than patterns: LuaJIT compiles them.

local function malformed(what, pos)
  reject(400, format("malformed JSON body: %s at byte %d", what, pos))
end

local function skip_ws(s, i)
  local c = byte(s, i)
  while c == 32 or c == 10 or c == 13 or c == 9 do
    i = i + 1
    c = byte(s, i)
  end
  return i
end

local ESCAPES = {[34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f", [110] = "\n",
                 [114] = "\r", [116] = "\t"}

local function hex4(s, i)
  local h = sub(s, i, i + 3)
  if not find(h, "^%x%x%x%x$") then malformed("invalid \\u escape", i - 2) end
  return tonumber(h, 16)
end

local function parse_string(s, i) -- s[i] is '"'
  local j, start, parts = i + 1, i + 1, nil
  while true do
    local c = byte(s, j)
    if c == 34 then
      local str = sub(s, start, j - 1)
      if parts then
        parts[#parts + 1] = str
        str = concat(parts)
      end
      return {kind = "string", str = str, src = s, first = i, last = j}, j + 1
    elseif c == 92 then
      parts = parts or {}
      parts[#parts + 1] = sub(s, start, j - 1)
      local e = byte(s, j + 1)
      if e == 117 then -- \uXXXX, surrogate pairs joined
        local cp = hex4(s, j + 2)
        local k = j + 6
        if cp >= 0xD800 and cp <= 0xDBFF then
          if sub(s, k, k + 1) ~= "\\u" then malformed("unpaired surrogate in a \\u escape", j) end
          local lo = hex4(s, k + 2)
          if lo < 0xDC00 or lo > 0xDFFF then malformed("unpaired surrogate in a \\u escape", j) end
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
          k = k + 6
        elseif cp >= 0xDC00 and cp <= 0xDFFF then
          malformed("unpaired surrogate in a \\u escape", j)
        end
        parts[#parts + 1] = utf8_char(cp)
        j = k
      elseif e and ESCAPES[e] then
        parts[#parts + 1] = ESCAPES[e]
        j = j + 2
      else
        malformed("invalid escape in a string", j)
      end
      start = j
    elseif c == nil then
      malformed("unterminated string", i)
    elseif c < 32 then
      malformed("unescaped control character in a string", j)
    else
      j = j + 1
    end
  end
end

local function digits(s, j) -- index after the digits from j
  local c = byte(s, j)
  while c and c >= 48 and c <= 57 do
    j = j + 1
    c = byte(s, j)
  end
  return j
end

local function parse_number(s, i)
  local j = (byte(s, i) == 45) and i + 1 or i -- '-'
  local c = byte(s, j)
  if c == 48 then
    j = j + 1
  elseif c and c >= 49 and c <= 57 then
    j = digits(s, j)
  else
    malformed("invalid number", i)
  end
  local integral = true
  if byte(s, j) == 46 then -- '.'
    local e = digits(s, j + 1)
    if e == j + 1 then malformed("invalid number", i) end
    j, integral = e, false
  end
  c = byte(s, j)
  if c == 101 or c == 69 then -- 'e', 'E'
    local k = j + 1
    c = byte(s, k)
    if c == 43 or c == 45 then k = k + 1 end
    local e = digits(s, k)
    if e == k then malformed("invalid number", i) end
    j, integral = e, false
  end
  return {kind = "number", raw = sub(s, i, j - 1), integral = integral}, j
end

local LITERALS = {[116] = "true", [102] = "false", [110] = "null"}

local parse_value

local function parse_container(s, i, depth, close)
  if depth >= MAX_DEPTH then malformed(format("nesting deeper than %d levels", MAX_DEPTH), i) end
  local object = close == 125 -- '}'
  local node = object and {kind = "object", members = {}} or {kind = "array", items = {}}
  local j = skip_ws(s, i + 1)
  if byte(s, j) == close then return node, j + 1 end
  local list = object and node.members or node.items
  while true do
    local value
    if object then
      if byte(s, j) ~= 34 then malformed("expected a string key", j) end
      local key
      key, j = parse_string(s, j)
      j = skip_ws(s, j)
      if byte(s, j) ~= 58 then malformed("expected ':' after an object key", j) end
      value, j = parse_value(s, skip_ws(s, j + 1), depth + 1)
      list[#list + 1] = {key = key.str, node = value}
    else
      value, j = parse_value(s, j, depth + 1)
      list[#list + 1] = value
    end
    j = skip_ws(s, j)
    local c = byte(s, j)
    if c == close then return node, j + 1 end
    if c ~= 44 then -- ','
      malformed(object and "expected ',' or '}'" or "expected ',' or ']'", j)
    end
    j = skip_ws(s, j + 1)
  end
end

parse_value = function(s, i, depth)
  local c = byte(s, i)
  if c == 34 then return parse_string(s, i) end
  if c == 123 then return parse_container(s, i, depth, 125) end
  if c == 91 then return parse_container(s, i, depth, 93) end
  if c == 45 or (c and c >= 48 and c <= 57) then return parse_number(s, i) end
  local word = c and LITERALS[c]
  if word and sub(s, i, i + #word - 1) == word then
    return {kind = word, raw = word}, i + #word
  end
  malformed(c and "expected a value" or "unexpected end of the body", i)
end

local function parse_json(s)
  local bad = utf8_error(s)
  if bad then malformed("invalid UTF-8", bad) end
  local i = skip_ws(s, 1)
  if i > #s then
    reject(400, "malformed JSON body: only whitespace; send a JSON object (or no body at all)")
  end
  local node, j = parse_value(s, i, 0)
  j = skip_ws(s, j)
  if j <= #s then malformed("unexpected data after the JSON value", j) end
  return node
end

---------------------------------------------------------------------------
-- Types of the proto3 JSON mapping.

local LIMITS = {
  int32 = {"2147483648", "2147483647"},
  uint32 = {nil, "4294967295"},
  int64 = {"9223372036854775808", "9223372036854775807"},
  uint64 = {nil, "18446744073709551615"},
}
local BITS = {int32 = "a 32-bit integer", uint32 = "an unsigned 32-bit integer",
              int64 = "a 64-bit integer", uint64 = "an unsigned 64-bit integer"}

-- Integer text (optional '-', digits) within the type's range?
local function in_range(text, kind)
  local negative = byte(text, 1) == 45
  local digits = (negative and sub(text, 2) or text):gsub("^0+", "")
  if digits == "" then return true end
  local limit = LIMITS[kind][negative and 1 or 2]
  return limit ~= nil and (#digits < #limit or (#digits == #limit and digits <= limit))
end

local function describe(node)
  local kind = node.kind
  if kind == "object" then return "an object" end
  if kind == "array" then return "an array" end
  local raw = node.raw or sub(node.src, node.first, node.last)
  if printable(raw) then return raw end
  return format("a %s of %s", kind, bytes(#raw))
end

local function enum_names(spec)
  local names = {}
  for _, v in ipairs(API.enums[spec.enum]) do names[#names + 1] = v end
  return concat(names, ", ")
end

-- Check one scalar. ``text`` is the string to check (a JSON string's content,
-- a number's text, or a path/query value); ``json_kind`` the JSON kind
-- ("string", "number", "true", ... or "text" for path and query values).
-- Returns nil, or what was expected and whether the value was out of range.
local function scalar_error(spec, json_kind, text, integral)
  local t = spec.type
  if t == "bool" then
    if json_kind == "true" or json_kind == "false" then return nil end
    if json_kind == "text" and (text == "true" or text == "false") then return nil end
    return "expected true or false"
  elseif LIMITS[t] then
    local ok = (json_kind == "number" and integral) or
               ((json_kind == "string" or json_kind == "text") and find(text, "^-?%d+$"))
    if not ok then
      return (t == "uint32" or t == "uint64") and "expected a non-negative integer"
             or "expected an integer"
    end
    if not in_range(text, t) then return "out of range for " .. BITS[t], true end
  elseif t == "double" then
    if json_kind == "number" then return nil end
    if (json_kind == "string" or json_kind == "text") and
       (text == "NaN" or text == "Infinity" or text == "-Infinity" or
        find(text, "^-?%d+%.?%d*$") or find(text, "^-?%d+%.?%d*[eE][+-]?%d+$")) then
      return nil
    end
    return "expected a number"
  elseif t == "string" or t == "bytes" then
    if json_kind == "string" then return nil end
    if json_kind == "text" then
      if utf8_error(text) then return "expected UTF-8 text" end
      return nil
    end
    return t == "bytes" and "expected a base64 string" or "expected a string"
  elseif t == "enum" then
    if (json_kind == "string" or json_kind == "text") and ENUMS[spec.enum][text] then return nil end
    if (json_kind == "number" and integral) or (json_kind == "text" and find(text, "^-?%d+$")) then
      if in_range(text, "int32") then return nil end
    end
    return "expected one of " .. enum_names(spec)
  end
  return nil
end

local PLURALS = {bool = "true/false values", string = "strings", bytes = "base64 strings",
                 double = "numbers", int32 = "integers", uint32 = "integers", int64 = "integers",
                 uint64 = "integers", enum = "enum names", message = "objects"}

-- What is wrong with a value for one (not repeated) field, or nil.
local function value_error(spec, node)
  local kind = node.kind
  if spec.type == "any" then return nil end -- well-known types have their own JSON forms
  if spec.type == "message" or spec.type == "map" then
    if kind ~= "object" then return "expected an object, got " .. describe(node) end
    return nil
  end
  local expected, range = scalar_error(spec, kind, kind == "string" and node.str or node.raw,
                                       node.integral)
  if range then return format("%s is %s", describe(node), expected) end
  if expected then return format("%s, got %s", expected, describe(node)) end
  return nil
end

-- Check a JSON value against a field, ``label`` naming it. Returns nil or the message.
local function node_error(spec, node, label)
  if node.kind == "null" then return nil end -- proto3 JSON: the default value
  if not spec.repeated then
    local err = value_error(spec, node)
    return err and format("%s: %s", label, err)
  end
  if node.kind ~= "array" then
    return format("%s: expected an array of %s, got %s", label, PLURALS[spec.type] or "values",
                  describe(node))
  end
  for k, value in ipairs(node.items) do
    local err = value_error(spec.item, value) -- a null item is not a default: refused
    if err then return format("%s item %d: %s", label, k, err) end
  end
  return nil
end

-- Check a path or query value; ``label`` names it. Rejects a bad one.
local function check_text(spec, value, label)
  local expected, range = scalar_error(spec, "text", value)
  if not expected then return end
  local shown = printable(value) and '"' .. value .. '"' or "a value that is not shown"
  if range then reject(400, format("%s: %s is %s", label, shown, expected)) end
  reject(400, format("%s: %s, got %s", label, expected, shown))
end

---------------------------------------------------------------------------
-- Routing: which REST method, with the values of its path variables.

local function split_path(path)
  -- One trailing slash is ignored, as the transcoder does.
  if #path > 1 and sub(path, -1) == "/" then path = sub(path, 1, -2) end
  if byte(path, 1) ~= 47 then return nil end
  local segs = {}
  for seg in (sub(path, 2) .. "/"):gmatch("([^/]*)/") do
    if seg == "" then return nil end
    segs[#segs + 1] = seg
  end
  return segs
end

local function match(m, segs)
  local n = #m.segments
  if #segs ~= n then return nil end
  local last = segs[n]
  if m.verb then
    local suffix = ":" .. m.verb
    if #last <= #suffix or sub(last, -#suffix) ~= suffix then return nil end
    last = sub(last, 1, -#suffix - 1)
  end
  local vars = {}
  for i, t in ipairs(m.segments) do
    local seg = (i == n) and last or segs[i]
    if type(t) == "table" then
      vars[#vars + 1] = {field = t.var, value = seg}
    elseif seg ~= t then
      return nil
    end
  end
  return vars
end

local function route(method, path)
  local segs = split_path(path)
  local found, verbed = {}, false
  if segs then
    for _, m in ipairs(API.methods) do
      local vars = match(m, segs)
      if vars then
        found[#found + 1] = {m = m, vars = vars}
        verbed = verbed or m.verb ~= nil
      end
    end
  end
  -- "/backups/5:verify" names the verify method, not GetBackup of id "5:verify".
  local allowed, seen, template = {}, {}, nil
  for _, f in ipairs(found) do
    if f.m.verb or not verbed then
      if f.m.http_method == method then return f.m, f.vars end
      template = template or f.m.template
      if not seen[f.m.http_method] then
        seen[f.m.http_method] = true
        allowed[#allowed + 1] = f.m.http_method
      end
    end
  end
  if not template then
    reject(404, format("no REST method for %s %s", printable(method) and method or "this method",
                       printable(path, SHOW_PATH_MAX) and path or "this path"))
  end
  sort(allowed)
  reject(405, format("method %s is not allowed on %s; allowed: %s",
                     printable(method) and method or "(not shown)", template,
                     concat(allowed, ", ")), concat(allowed, ", "))
end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

-- Proto names of a message's fields, less those bound by the path.
local function known(message, bound)
  local names = {}
  for _, name in ipairs(FIELDS[message].names) do
    if bound[name] ~= "path" then names[#names + 1] = name end
  end
  return #names > 0 and concat(names, ", ") or "none"
end

-- Path variables and query parameters of a matched method; returns what the
-- body check needs to know: the fields already bound, and by what.
local function check_path_and_query(m, vars, query)
  local fields = FIELDS[m.request]
  local bound = {} -- proto name -> "path" or "query"
  for _, v in ipairs(vars) do
    local spec = fields.by_name[v.field]
    check_text(spec, unescape(v.value), format('path parameter "%s"', spec.name))
    bound[spec.name] = "path"
  end
  for pair in (query or ""):gmatch("[^&]+") do
    local eq = find(pair, "=", 1, true)
    local name = unescape((eq and sub(pair, 1, eq - 1) or pair):gsub("%+", " "))
    local value = unescape((eq and sub(pair, eq + 1) or ""):gsub("%+", " "))
    local head = name:match("^([^.]+)%.") -- "field.sub" sets a field of a message field
    local spec = fields.by_name[head or name]
    if not spec or (head and spec.type ~= "message") then
      reject(400, format("unknown query parameter %s; known parameters: %s",
                         quoted_name(name), known(m.request, bound)))
    end
    if spec.name == "identity" then
      -- A private key in a URL ends up in proxies' and browsers' logs.
      reject(400, 'query parameter "identity": a private key never goes in a URL; set ' ..
                  'encryption.identityFile on the server, or pass it over gRPC ' ..
                  '(backupctl --identity-file)')
    end
    if bound[spec.name] == "path" then
      reject(400, format('query parameter "%s" is given by the path (%s); remove it',
                         spec.name, m.template))
    end
    if not head then
      if bound[spec.name] and not spec.repeated then
        reject(400, format('query parameter "%s" is given twice', spec.name))
      end
      check_text(spec, value, format('query parameter "%s"', spec.name))
    end
    bound[spec.name] = "query"
  end
  return bound
end

-- The JSON body of a matched method.
local function check_body(m, bound, body)
  local root = parse_json(body)
  local message = m.request
  if m.body ~= "*" then -- the body is one field's value
    local spec = FIELDS[message].by_name[m.body]
    local err = node_error(spec, root, "the request body")
    if err then reject(400, err) end
    if spec.type ~= "message" or root.kind ~= "object" then return end
    message, bound = spec.message, {}
  elseif root.kind ~= "object" then
    reject(400, format("the request body must be a JSON object, got %s", describe(root)))
  end
  local fields = FIELDS[message]
  local given = {}
  for _, member in ipairs(root.members) do
    local spec = fields.by_name[member.key]
    if not spec then
      reject(400, format("unknown field %s in the request body; known fields: %s",
                         quoted_name(member.key), known(message, bound)))
    end
    if bound[spec.name] == "path" then
      reject(400, format('field "%s" is given by the path (%s); remove it from the body',
                         spec.name, m.template))
    elseif bound[spec.name] then
      reject(400, format('field "%s" is given both as a query parameter and in the body',
                         spec.name))
    end
    if given[spec.name] then
      local how = given[spec.name] ~= member.key and
                  format(' (as "%s" and "%s")', given[spec.name], member.key) or ""
      reject(400, format('field "%s" is given twice in the request body%s', spec.name, how))
    end
    given[spec.name] = member.key
    local err = node_error(spec, member.node, format('field "%s"', spec.name))
    if err then reject(400, err) end
  end
end

local function respond(handle, err)
  local status, message, allow = 500, "the REST gateway's request check failed; see Envoy's log", nil
  if getmetatable(err) == Reject then
    status, message, allow = err.status, err.message, err.allow
  else
    handle:logErr("rest_guard: " .. tostring(err))
  end
  -- The mark tells local_reply_config that the message is ours to show.
  handle:streamInfo():dynamicMetadata():set("pgbackup", "rest_guard", "rejected")
  local reply = {[":status"] = tostring(status)}
  if allow then reply["allow"] = allow end
  handle:respond(reply, message)
end

function envoy_on_request(handle)
  local headers = handle:headers()
  -- For local_reply_config: native gRPC keeps Envoy's gRPC error replies.
  local grpc = find(headers:get("content-type") or "", "^application/grpc") ~= nil
  handle:streamInfo():dynamicMetadata():set("pgbackup", "api", grpc and "grpc" or "rest")
  if grpc then return end
  local ok, m, bound = pcall(function()
    local path = headers:get(":path") or ""
    local q = find(path, "?", 1, true)
    local found, vars = route(headers:get(":method") or "", q and sub(path, 1, q - 1) or path)
    return found, check_path_and_query(found, vars, q and sub(path, q + 1) or nil)
  end)
  if not ok then return respond(handle, m) end
  if m.body == "" then return end -- no body to check: not read, so streams stay streams
  -- Outside pcall: body() waits for the whole body by yielding.
  local buffer = handle:body()
  if not buffer or buffer:length() == 0 then return end -- no body: all fields default
  local checked, err = pcall(check_body, m, bound, buffer:getBytes(0, buffer:length()))
  if not checked then return respond(handle, err) end
end
