package rpc

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/creditd/creditd/fsm"
)

// jsonCodec is Connect's JSON codec (protojson, answers written the same
// way) made strict: a request naming a field the message does not have, or
// an enum value by a name the enum does not have, is refused. Connect's own
// codec decodes with DiscardUnknown, which drops both silently: a misspelt
// "threshhold" left the threshold unset and "mode": "TO_TARGET" stored
// AUTO_TOP_UP_MODE_FIXED, the enum's default. In a ledger a typo must not
// change what a request means. The cost: a client built against a newer
// .proto that sends a field this server does not know is refused, naming
// the field, rather than having it ignored; upgrade servers first. Binary
// protobuf keeps protobuf's rules (unknown fields are skipped).
//
// A refusal names the field (decodeJSON). Connect puts "unmarshal message: "
// in front of a codec's error, and a codec cannot add details; JSON
// requests (compressed or not, and Connect GETs) are therefore decoded once
// before Connect too (strictJSON), and refused there in the shape of every
// other invalid argument.
type jsonCodec struct{ name string }

// withStrictJSON replaces Connect's JSON codecs: it registers them under
// both names, "json" and "json; charset=utf-8", as Connect does.
func withStrictJSON() connect.HandlerOption {
	return connect.WithHandlerOptions(
		connect.WithCodec(jsonCodec{name: "json"}),
		connect.WithCodec(jsonCodec{name: "json; charset=utf-8"}),
	)
}

func (c jsonCodec) Name() string { return c.name }

func (jsonCodec) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", m)
	}
	return protojson.MarshalOptions{}.Marshal(pm)
}

// MarshalAppend lets Connect marshal answers into its pooled buffers.
func (jsonCodec) MarshalAppend(dst []byte, m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", m)
	}
	return protojson.MarshalOptions{}.MarshalAppend(dst, pm)
}

func (jsonCodec) Unmarshal(b []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a protobuf message", m)
	}
	if len(b) == 0 {
		return errors.New("zero-length payload is not a valid JSON object")
	}
	return decodeJSON(b, pm)
}

func (jsonCodec) IsBinary() bool { return false }

// decodeJSON decodes a JSON request strictly (jsonCodec). A failure at a
// field is an invalid-argument error naming it (invalidField) with
// protojson's reason: "ttl: invalid google.protobuf.Duration value "10m"".
// One that names no field (a body that is not a JSON object) is protojson's
// error as it is.
func decodeJSON(b []byte, m proto.Message) error {
	err := protojson.UnmarshalOptions{}.Unmarshal(b, m)
	if err == nil {
		return nil
	}
	if fe := jsonFieldError(b, m.ProtoReflect().Descriptor(), err.Error()); fe != nil {
		return fe
	}
	return fmt.Errorf("unmarshal into %T: %w", m, err)
}

// maxReasonBytes bounds what an error quotes of a request: protojson's
// reason quotes the offending value or name, which may be long.
const maxReasonBytes = 256

// jsonFieldError turns protojson's error text, which gives only a position
// ("proto: (line 1:85): invalid google.protobuf.Duration value "10m""),
// into an error naming the field at that position, or returns nil.
func jsonFieldError(b []byte, md protoreflect.MessageDescriptor, text string) error {
	i := strings.Index(text, "(line ")
	if i < 0 {
		return nil
	}
	pos, reason, ok := strings.Cut(text[i+len("(line "):], "): ")
	if !ok {
		return nil
	}
	ls, cs, ok := strings.Cut(pos, ":")
	if !ok {
		return nil
	}
	line, err1 := strconv.Atoi(ls)
	col, err2 := strconv.Atoi(cs)
	if err1 != nil || err2 != nil {
		return nil
	}
	off, ok := byteOffset(b, line, col)
	if !ok {
		return nil
	}
	path, fd, ok := jsonPathAt(b, off, md)
	if !ok {
		return nil
	}
	if strings.Contains(text[:i], "syntax error") {
		reason = "syntax error: " + reason
	}
	reason = truncate(reason, maxReasonBytes)
	if fd != nil && fd.Enum() != nil && strings.HasPrefix(reason, "invalid value for enum") {
		reason += " (want one of " + enumNames(fd.Enum()) + ", or its number)"
	}
	return invalidField(path, "%s", reason)
}

// byteOffset inverts protojson's position: lines count from 1, columns
// count runes (each invalid byte one) from 1.
func byteOffset(b []byte, line, col int) (int, bool) {
	if line < 1 || col < 1 {
		return 0, false
	}
	off := 0
	for ; line > 1; line-- {
		j := bytes.IndexByte(b[off:], '\n')
		if j < 0 {
			return 0, false
		}
		off += j + 1
	}
	for ; col > 1; col-- {
		if off >= len(b) || b[off] == '\n' {
			return 0, false
		}
		_, n := utf8.DecodeRune(b[off:])
		off += n
	}
	return off, off < len(b)
}

// jsonFrame is an object or array jsonPathAt is inside.
type jsonFrame struct {
	array bool
	path  string
	// An object's message (nil: not known) and its current member.
	md      protoreflect.MessageDescriptor
	wantKey bool
	key     string
	fd      protoreflect.FieldDescriptor
	// An array's field and its current element.
	list  protoreflect.FieldDescriptor
	index int
}

// value returns the path and field of the value the frame reads next.
func (f *jsonFrame) value() (string, protoreflect.FieldDescriptor) {
	if f.array {
		return f.path + "[" + strconv.Itoa(f.index) + "]", f.list
	}
	return joinPath(f.path, f.key), f.fd
}

func (f *jsonFrame) done() {
	if f.array {
		f.index++
	} else {
		f.wantKey = true
	}
}

// jsonPathAt returns the path, in the request's proto field names
// ("events[3].quantity", "auto_top_up.mode"; a name the message does not
// have as sent), of the member name or value that starts at byte off of the
// JSON text b, whose top-level object is a message md, and its field when
// known. Its work is one pass over b up to off; it reports false when off
// starts no name or value inside the top-level object, or b is not JSON
// before it.
func jsonPathAt(b []byte, off int, md protoreflect.MessageDescriptor) (string, protoreflect.FieldDescriptor, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var stack []*jsonFrame
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", nil, false
		}
		at := int(dec.InputOffset()) > off // tok is the token that starts at off
		var top *jsonFrame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			if top == nil || at {
				return "", nil, false
			}
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				return "", nil, false
			}
			stack[len(stack)-1].done()
			continue
		}
		if top != nil && !top.array && top.wantKey {
			name, _ := tok.(string)
			top.key, top.fd = name, nil
			if top.md != nil {
				fields := top.md.Fields()
				if top.fd = fields.ByJSONName(name); top.fd == nil {
					top.fd = fields.ByTextName(name)
				}
			}
			if top.fd != nil {
				top.key = string(top.fd.Name())
			} else if name == "" {
				top.key = `""`
			} else {
				top.key = truncate(name, 128)
			}
			top.wantKey = false
			if at {
				return joinPath(top.path, top.key), top.fd, true
			}
			continue
		}
		var path string
		var fd protoreflect.FieldDescriptor
		if top != nil {
			path, fd = top.value()
		}
		if at {
			return path, fd, path != ""
		}
		switch tok {
		case json.Delim('{'):
			f := &jsonFrame{path: path, wantKey: true}
			switch {
			case top == nil:
				f.md = md
			case fd != nil && fd.Message() != nil && (top.array || !fd.IsList()):
				f.md = fd.Message()
			}
			stack = append(stack, f)
		case json.Delim('['):
			f := &jsonFrame{array: true, path: path}
			if top != nil && !top.array && fd != nil && fd.IsList() {
				f.list = fd
			}
			stack = append(stack, f)
		default:
			if top == nil {
				return "", nil, false
			}
			top.done()
		}
	}
}

func joinPath(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// truncate cuts s to at most n bytes, on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// enumNames lists an enum's names but that of its zero value, which every
// creditd enum keeps for "unspecified".
func enumNames(ed protoreflect.EnumDescriptor) string {
	var names []string
	vals := ed.Values()
	for i := 0; i < vals.Len(); i++ {
		if v := vals.Get(i); v.Number() != 0 {
			names = append(names, string(v.Name()))
		}
	}
	return strings.Join(names, ", ")
}

// jsonProcedure is what strictJSON knows of a procedure: its request type,
// whether its answer is a stream (its request then comes in an envelope,
// as in gRPC), and whether Connect takes it as a GET too (a read without
// side effects: its message then comes in the query string).
type jsonProcedure struct {
	input     protoreflect.MessageType
	streaming bool
	get       bool
}

// jsonProcedures maps each procedure's path to its request type. Every
// creditd procedure takes one request message.
var jsonProcedures = sync.OnceValue(func() map[string]jsonProcedure {
	out := map[string]jsonProcedure{}
	for _, name := range serviceNames {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			continue // strictJSON leaves the service to the codec
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			continue
		}
		for i := 0; i < sd.Methods().Len(); i++ {
			m := sd.Methods().Get(i)
			if m.IsStreamingClient() {
				continue
			}
			mt, err := protoregistry.GlobalTypes.FindMessageByName(m.Input().FullName())
			if err != nil {
				continue
			}
			// As connect-go's generated handlers: GET for a unary method
			// whose idempotency_level is NO_SIDE_EFFECTS.
			opts, _ := m.Options().(*descriptorpb.MethodOptions)
			get := !m.IsStreamingServer() && opts.GetIdempotencyLevel() == descriptorpb.MethodOptions_NO_SIDE_EFFECTS
			out["/"+name+"/"+string(m.Name())] = jsonProcedure{input: mt, streaming: m.IsStreamingServer(), get: get}
		}
	}
	return out
})

// strictJSON refuses a JSON request whose message does not decode at a
// field, naming the field as every other invalid argument does: the message
// starts with the field path and carries a FieldViolation. Connect would
// refuse it too (jsonCodec), but prefixed "unmarshal message: " and without
// the detail. It reads the request message ahead of Connect (jsonMessage,
// or jsonQueryMessage for a Connect GET), uncompressing it as Connect
// would, and hands Connect the same bytes; every other request, and one
// that decodes or fails elsewhere (a body that is not a JSON object, over
// MaxMessageBytes compressed or not, in a compression Connect does not
// take, or that could not be read), goes to Connect as it came. It runs
// after front: the key is checked before the body is read. A JSON message
// is decoded twice, and uncompressed twice when compressed; binary ones are
// not touched.
func (s *Server) strictJSON(h http.Handler) http.Handler {
	errs := connect.NewErrorWriter()
	procs := jsonProcedures()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := procs[r.URL.Path]
		var msg []byte
		switch {
		case !ok:
		case r.Method == http.MethodPost:
			msg = jsonMessage(r, p.streaming, s.opts.MaxMessageBytes)
		case r.Method == http.MethodGet && p.get:
			msg = jsonQueryMessage(r.URL.Query(), s.opts.MaxMessageBytes)
		}
		var fe *fsm.Error
		if msg != nil && errors.As(decodeJSON(msg, p.input.New().Interface()), &fe) {
			_ = errs.Write(w, r, s.toConnect(r.Context(), fe))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// jsonMessage reads the one JSON message of a request, uncompressed, or
// returns nil: Connect unary JSON (application/json, what curl sends: the
// body is the message, gzip-compressed under Content-Encoding: gzip), or
// the first envelope of gRPC, gRPC-Web or Connect streaming JSON (marked
// compressed in its flags, in the gzip the request's Grpc-Encoding or
// Connect-Content-Encoding names). What it read is put back in front of
// r.Body. It reads no more than limit bytes of message, compressed or
// not, as Connect (ReadMaxBytes), and an envelope's message without
// waiting for the end of the body.
func jsonMessage(r *http.Request, streaming bool, limit int) []byte {
	enveloped, encodingHeader, ok := jsonContentType(r.Header, streaming)
	if !ok {
		return nil
	}
	gzipped := false
	switch r.Header.Get(encodingHeader) {
	case "", "identity":
	case "gzip":
		gzipped = true
	default:
		return nil // Connect refuses a compression it does not take
	}
	var read []byte
	defer func() {
		r.Body = readCloser{Reader: io.MultiReader(bytes.NewReader(read), r.Body), Closer: r.Body}
	}()
	if !enveloped {
		body, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
		read = body
		if err != nil || len(body) == 0 || len(body) > limit {
			return nil
		}
		if gzipped {
			return gunzip(body, limit)
		}
		return body
	}
	var head [5]byte // flags (bit 0: compressed; 0 or 1 for a message), size
	n, err := io.ReadFull(r.Body, head[:])
	read = head[:n]
	if err != nil || head[0]&^envelopeCompressed != 0 || (head[0]&envelopeCompressed != 0 && !gzipped) {
		return nil
	}
	size := binary.BigEndian.Uint32(head[1:])
	if size == 0 || int64(size) > int64(limit) {
		return nil
	}
	env := make([]byte, len(head)+int(size))
	copy(env, head[:])
	n, err = io.ReadFull(r.Body, env[len(head):])
	read = env[:len(head)+n]
	if err != nil {
		return nil
	}
	if head[0]&envelopeCompressed != 0 {
		return gunzip(env[len(head):], limit)
	}
	return env[len(head):]
}

// envelopeCompressed is the flag of a compressed envelope (gRPC, gRPC-Web
// and Connect streaming).
const envelopeCompressed = 1

// gunzip returns the gzip data b uncompressed, or nil when it is not gzip
// or uncompresses to nothing or to more than limit bytes (Connect refuses
// it then, RESOURCE_EXHAUSTED for the size). It reads no more than limit+1
// bytes of what b uncompresses to: a small body that inflates past limit
// costs no more than limit.
func gunzip(b []byte, limit int) []byte {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil
	}
	out, err := io.ReadAll(io.LimitReader(zr, int64(limit)+1))
	if err != nil || len(out) == 0 || len(out) > limit {
		return nil
	}
	return out
}

// jsonQueryMessage is the JSON message of a Connect GET, as Connect reads
// it from the query string (encoding=json, message=, base64=1 for base64
// with or without padding, compression=gzip), or nil: another encoding,
// protocol version or compression, no message, or one that does not
// decode, is empty or holds more than limit bytes, compressed or not.
func jsonQueryMessage(q url.Values, limit int) []byte {
	if v := q.Get("connect"); v != "" && v != "v1" {
		return nil
	}
	if enc := q.Get("encoding"); enc != "json" && enc != "json; charset=utf-8" {
		return nil
	}
	gzipped := false
	switch q.Get("compression") {
	case "", "identity":
	case "gzip":
		gzipped = true
	default:
		return nil
	}
	if !q.Has("message") {
		return nil
	}
	text := q.Get("message")
	var in io.Reader = strings.NewReader(text)
	if q.Get("base64") == "1" {
		enc := base64.URLEncoding // padded, or no padding needed
		if len(text)%4 != 0 {
			enc = base64.RawURLEncoding
		}
		in = base64.NewDecoder(enc, in)
	}
	msg, err := io.ReadAll(io.LimitReader(in, int64(limit)+1))
	if err != nil || len(msg) == 0 || len(msg) > limit {
		return nil
	}
	if gzipped {
		return gunzip(msg, limit)
	}
	return msg
}

type readCloser struct {
	io.Reader
	io.Closer
}

// jsonContentType tells a JSON request Connect would decode with
// jsonCodec, whether its message comes in an envelope, and the header that
// names its compression: Content-Encoding for Connect unary (the whole
// body), Connect-Content-Encoding for Connect streaming and Grpc-Encoding
// for gRPC and gRPC-Web (each envelope marked compressed or not). An
// enveloped body under a Content-Encoding is left to Connect.
func jsonContentType(h http.Header, streaming bool) (enveloped bool, encodingHeader string, ok bool) {
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		return false, "", false
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return false, "", false
		}
	}
	if mt == "application/json" {
		return false, "Content-Encoding", !streaming
	}
	if ce := h.Get("Content-Encoding"); ce != "" && ce != "identity" {
		return false, "", false
	}
	switch mt {
	case "application/connect+json":
		return true, "Connect-Content-Encoding", streaming
	case "application/grpc+json", "application/grpc-web+json":
		return true, "Grpc-Encoding", true
	}
	return false, "", false
}
