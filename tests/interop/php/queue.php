<?php
/*
 * Slides 65-68 of the talk (QueueInterface, AbstractQueue, EmailQueue), made runnable.
 *
 * Fixes to the slides, each marked "fix:" below: valid interface syntax; AbstractQueue is
 * abstract (it has no work()); signal() is public so pcntl can call it, and async signals are
 * switched on; the queue is subscribed to before dispatching (the slides never subscribe);
 * readFrame()'s false is handled; EmailQueue decodes $frame->body instead of the frame; an
 * optional limit stops dispatch() after that many frames. Instead of mail(), EmailQueue writes
 * each e-mail as one JSON line to a stream (stdout by default).
 */
declare(strict_types=1);

interface QueueInterface
{
    public function __construct(Stomp $stomp, string $queue);

    public function dispatch();

    // fix: the slide's "publish : bool(array $message)" is not PHP
    public function publish(array $message): bool;

    public function work(StompFrame $message);
}

// fix: abstract, since it leaves work() to subclasses
abstract class AbstractQueue implements QueueInterface
{
    protected Stomp $stomp;
    protected string $queue;
    protected ?int $signal = null;
    protected ?int $limit = null;
    protected int $handled = 0;

    public function __construct(Stomp $stomp, string $queue)
    {
        $this->stomp = $stomp;
        $this->queue = $queue;
    }

    /** fix: stop after $limit frames (null: run until a signal arrives). */
    public function setLimit(?int $limit): void
    {
        $this->limit = $limit;
    }

    protected function prepare(): void
    {
        if (php_sapi_name() != 'cli') {
            throw new RuntimeException('You cannot dispatch outside of the CLI');
        }
        if (function_exists('pcntl_signal')) {
            pcntl_async_signals(true);  // fix: the slides rely on declare(ticks=1) somewhere else
            pcntl_signal(SIGTERM, [$this, 'signal']);
            pcntl_signal(SIGINT, [$this, 'signal']);
            pcntl_signal(SIGHUP, [$this, 'signal']);
        }
        $this->stomp->subscribe($this->queue);  // fix: the slides never subscribe
        $this->log("subscribed to {$this->queue}");
    }

    // fix: public, pcntl calls it from outside the class
    public function signal(int $signal): void
    {
        $this->signal = $signal;
    }

    public function dispatch(): void
    {
        $this->prepare();
        while (true) {
            if ($this->signal) {
                $this->log("stopping on signal {$this->signal}");
                break;
            }
            if ($this->limit !== null && $this->handled >= $this->limit) {
                $this->log("stopping after {$this->handled} frames");
                break;
            }
            if (!$this->stomp->hasFrame()) {
                $this->wait();
                continue;
            }
            $frame = $this->stomp->readFrame();
            if (!$frame instanceof StompFrame) {  // fix: readFrame() may return false
                continue;
            }
            if ($this->validate($frame)) {
                $this->work($frame);
            }
            $this->stomp->ack($frame);
            $this->handled++;
        }
    }

    protected function wait(): void
    {
        usleep(100000);  // the slides sleep 1 s
    }

    protected function validate(StompFrame $message): bool
    {
        return false;
    }

    public function publish(array $message): bool
    {
        return $this->stomp->send($this->queue, json_encode($message, JSON_THROW_ON_ERROR));
    }

    protected function log(string $line): void
    {
        fwrite(STDERR, $line . PHP_EOL);
    }
}

class EmailQueue extends AbstractQueue
{
    /** @var resource */
    private $outbox = STDOUT;

    /** Where "sent" e-mails go, one JSON line each (instead of mail()). */
    public function setOutbox($stream): void
    {
        $this->outbox = $stream;
    }

    public function validate(StompFrame $message): bool
    {
        // fix: the slide looks 'to' up in the frame object itself
        $mail = json_decode($message->body, true);
        if (!is_array($mail) || !array_key_exists('to', $mail)) {
            return false;
        }
        return true;
    }

    public function work(StompFrame $message): void
    {
        $mail = json_decode($message->body);  // fix: the slide decodes the frame, not its body
        // mail($mail->to, $mail->subject, $mail->message);
        $line = json_encode(
            ['to' => $mail->to, 'subject' => $mail->subject ?? '', 'message' => $mail->message ?? ''],
            JSON_THROW_ON_ERROR | JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES
        );
        fwrite($this->outbox, $line . PHP_EOL);
    }
}
