package rpc

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

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
// requests are therefore decoded once before Connect too (strictJSON), and
// refused there in the shape of every other invalid argument.
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
// and whether its answer is a stream (its request then comes in an
// envelope, as in gRPC).
type jsonProcedure struct {
	input     protoreflect.MessageType
	streaming bool
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
			out["/"+name+"/"+string(m.Name())] = jsonProcedure{input: mt, streaming: m.IsStreamingServer()}
		}
	}
	return out
})

// strictJSON refuses a JSON request whose message does not decode at a
// field, naming the field as every other invalid argument does: the message
// starts with the field path and carries a FieldViolation. Connect would
// refuse it too (jsonCodec), but prefixed "unmarshal message: " and without
// the detail. It reads the request message (jsonMessage) ahead of Connect
// and hands Connect the same bytes; every other request, and one that
// decodes or fails elsewhere (a body that is not a JSON object, over
// MaxMessageBytes, compressed, or that could not be read), goes to Connect
// as it came. It runs after front: the key is checked before the body is
// read. A JSON message is decoded twice; binary ones are not touched.
func (s *Server) strictJSON(h http.Handler) http.Handler {
	errs := connect.NewErrorWriter()
	procs := jsonProcedures()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := procs[r.URL.Path]
		if !ok || r.Method != http.MethodPost {
			h.ServeHTTP(w, r)
			return
		}
		msg := jsonMessage(r, p.streaming, s.opts.MaxMessageBytes)
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
// body is the message), or the first envelope of gRPC, gRPC-Web or Connect
// streaming JSON. What it read is put back in front of r.Body. It reads no
// more than limit bytes of message, and an envelope's message without
// waiting for the end of the body.
func jsonMessage(r *http.Request, streaming bool, limit int) []byte {
	enveloped, ok := jsonContentType(r.Header, streaming)
	if !ok {
		return nil
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
		return body
	}
	var head [5]byte // flags (0: not compressed, not an end of stream), size
	n, err := io.ReadFull(r.Body, head[:])
	read = head[:n]
	if err != nil || head[0] != 0 {
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
	return env[len(head):]
}

type readCloser struct {
	io.Reader
	io.Closer
}

// jsonContentType tells a JSON request Connect would decode with
// jsonCodec, and whether its message comes in an envelope.
func jsonContentType(h http.Header, streaming bool) (enveloped, ok bool) {
	if ce := h.Get("Content-Encoding"); ce != "" && ce != "identity" {
		return false, false
	}
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		return false, false
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return false, false
		}
	}
	switch mt {
	case "application/json":
		return false, !streaming
	case "application/connect+json":
		return true, streaming
	case "application/grpc+json", "application/grpc-web+json":
		return true, true
	}
	return false, false
}
