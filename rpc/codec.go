package rpc

import (
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// protoCodec is Connect's binary protobuf codec (Connect and gRPC alike),
// but a request refused for a string that is not UTF-8 names the field:
// protobuf's own error ("string field contains invalid UTF-8") does not
// say which of a batch's 10,000 events holds it.
type protoCodec struct{}

func (protoCodec) Name() string { return "proto" }

func (protoCodec) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", m)
	}
	return proto.Marshal(pm)
}

// MarshalAppend lets Connect marshal answers into its pooled buffers.
func (protoCodec) MarshalAppend(dst []byte, m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", m)
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, pm)
}

func (protoCodec) Unmarshal(b []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a protobuf message", m)
	}
	err := proto.Unmarshal(b, pm)
	if err == nil {
		return nil
	}
	// Only a failed decode pays for the second walk.
	if path := badUTF8Path(b, pm.ProtoReflect().Descriptor(), ""); path != "" {
		return fmt.Errorf("%s: is not valid UTF-8", path)
	}
	return fmt.Errorf("unmarshal into %T: %w", m, err)
}

func (protoCodec) IsBinary() bool { return true }

// badUTF8Path walks a message's wire bytes and returns the path of the
// first string field that is not UTF-8 ("events[3].customer_id"), or ""
// when there is none (or the bytes are malformed otherwise).
func badUTF8Path(b []byte, md protoreflect.MessageDescriptor, prefix string) string {
	seen := map[protowire.Number]int{} // elements of repeated fields so far
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		if fd == nil || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return ""
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		name := prefix + string(fd.Name())
		if fd.IsList() {
			name = fmt.Sprintf("%s[%d]", name, seen[num])
			seen[num]++
		}
		switch fd.Kind() {
		case protoreflect.StringKind:
			if !utf8.Valid(v) {
				return name
			}
		case protoreflect.MessageKind, protoreflect.GroupKind:
			if p := badUTF8Path(v, fd.Message(), name+"."); p != "" {
				return p
			}
		}
	}
	return ""
}
