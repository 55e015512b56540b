package proxy

import (
	"context"
	"errors"
	"io"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// frame is an undecoded gRPC message. Relayed calls never decode their
// payload: the proxy does not need to understand a RuntimeService call to
// forward it, and new CRI methods keep working without a rebuild.
type frame struct{ data []byte }

// pooledFrame is an undecoded message kept in the buffers of gRPC's pool it
// was received in, not copied out of them: the runtime's answer to an
// unfiltered ListImages is a megabyte or more on every call, and a copy
// would be as much garbage, or as much memory held by a pool. Its holder
// frees it, or hands it to gRPC to send: Marshal passes the buffers on, and
// gRPC frees them once written.
type pooledFrame struct{ data mem.BufferSlice }

// bytes returns the message in one piece: the buffer it came in, or a copy
// joining its buffers.
func (f *pooledFrame) bytes() []byte {
	if len(f.data) == 1 {
		return f.data[0].ReadOnlyData()
	}
	return f.data.Materialize()
}

func (f *pooledFrame) free() {
	f.data.Free()
	f.data = nil
}

// Codec is the server codec: raw frames pass through as bytes, every other
// message is protobuf. NewGRPCServer installs it; the relay and the undecoded
// ImageStatus use it on the client side too.
func rawCodec() encoding.CodecV2 { return codec{proto: encoding.GetCodecV2(proto.Name)} }

// rawCall is the call option for undecoded calls to the runtime, made once:
// it sits on the path of every relayed and undecoded call.
var rawCall = grpc.ForceCodecV2(rawCodec())

type codec struct{ proto encoding.CodecV2 }

func (c codec) Name() string { return proto.Name }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	switch f := v.(type) {
	case *frame:
		return mem.BufferSlice{mem.SliceBuffer(f.data)}, nil
	case *pooledFrame:
		data := f.data
		f.data = nil // gRPC's now
		return data, nil
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	switch f := v.(type) {
	case *frame:
		f.data = data.Materialize()
		return nil
	case *pooledFrame:
		f.free()
		data.Ref() // gRPC frees data after Unmarshal; f keeps the buffers
		f.data = data
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

// relay is a grpc.UnknownServiceHandler: it forwards any call the proxy does
// not serve itself (the RuntimeService, but for the four calls of
// runtime_service.go) to the runtime unchanged, streams included, with
// metadata, headers, trailers and status codes.
func (s *Server) relay(_ any, ss grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "relay: no method in stream")
	}
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		ctx = metadata.NewOutgoingContext(ctx, forwardable(md))
	}
	cs, err := s.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true},
		method, rawCall)
	if err != nil {
		return err
	}

	// Caller → runtime. Ends with CloseSend when the caller half-closes; any
	// other receive error ends the whole call through cancel.
	go func() {
		for {
			f := new(frame)
			if err := ss.RecvMsg(f); err != nil {
				if errors.Is(err, io.EOF) {
					_ = cs.CloseSend()
				} else {
					cancel()
				}
				return
			}
			if err := cs.SendMsg(f); err != nil {
				// The runtime ended the call; its status arrives on RecvMsg.
				return
			}
		}
	}()

	// Runtime → caller.
	if hdr, err := cs.Header(); err == nil && len(hdr) > 0 {
		if err := ss.SendHeader(hdr); err != nil {
			return err
		}
	}
	for {
		f := new(frame)
		if err := cs.RecvMsg(f); err != nil {
			ss.SetTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := ss.SendMsg(f); err != nil {
			return err
		}
	}
}

// forwardable drops the transport's own headers from incoming metadata; the
// client connection to the runtime sets its own.
func forwardable(md metadata.MD) metadata.MD {
	out := metadata.MD{}
	for k, v := range md {
		if strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") || k == "content-type" || k == "user-agent" {
			continue
		}
		out[k] = v
	}
	return out
}

// bytesField returns the last occurrence of length-delimited field num of a
// protobuf message (the protobuf rule for a repeated singular field), or nil.
func bytesField(b []byte, num protowire.Number) []byte {
	var v []byte
	for len(b) > 0 {
		n, t, l := protowire.ConsumeTag(b)
		if l < 0 {
			return nil
		}
		b = b[l:]
		m := protowire.ConsumeFieldValue(n, t, b)
		if m < 0 {
			return nil
		}
		if n == num && t == protowire.BytesType {
			v, _ = protowire.ConsumeBytes(b[:m])
		}
		b = b[m:]
	}
	return v
}
