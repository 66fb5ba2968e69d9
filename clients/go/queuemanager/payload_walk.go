package queuemanager

import (
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// Every Payload in a protobuf message, however deep: codecs.go encodes and decodes them in place.

var payloadName = (&pb.Payload{}).ProtoReflect().Descriptor().FullName()

// walk calls fn on every Payload in m, however deep.
func walk(m protoreflect.Message, fn func(*pb.Payload) error) error {
	var err error
	visit := func(child protoreflect.Message) {
		if err != nil {
			return
		}
		name := child.Descriptor().FullName()
		switch {
		case name == payloadName:
			err = fn(child.Interface().(*pb.Payload))
		case !strings.HasPrefix(string(name), "google.protobuf."):
			err = walk(child, fn)
		}
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					visit(mv.Message())
					return err == nil
				})
			}
		case fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind:
		case fd.IsList():
			for i := 0; i < v.List().Len() && err == nil; i++ {
				visit(v.List().Get(i).Message())
			}
		default:
			visit(v.Message())
		}
		return err == nil
	})
	return err
}
