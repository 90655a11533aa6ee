<?php
/*
 * Slide 52 of the talk ("Fetching via STOMP"), made runnable.
 *
 *     php consumer.php [URL [COUNT [TIMEOUT_SECONDS]]]
 *
 * Subscribes to /queue/email (the extension subscribes with ack:client), polls with hasFrame(),
 * reads COUNT frames with readFrame(), acknowledges each one and prints its body on a line of
 * its own instead of calling mail(). Exits 3 if COUNT frames did not arrive within the timeout,
 * so it always terminates (the slide loops forever).
 */
declare(strict_types=1);

$url = $argv[1] ?? (getenv('QUEUEIT_STOMP_URL') ?: 'tcp://localhost:61613');
$count = (int) ($argv[2] ?? 1);
$timeout = (float) ($argv[3] ?? 20);

try {
    $stomp = new Stomp($url);
    $stomp->setReadTimeout(0, 200000);  // hasFrame() waits at most 0.2 s
    $stomp->subscribe('/queue/email');
    $deadline = microtime(true) + $timeout;
    $received = 0;
    while ($received < $count) {
        if (microtime(true) > $deadline) {
            fwrite(STDERR, "timed out: received $received of $count frames\n");
            exit(3);
        }
        if (!$stomp->hasFrame()) {
            usleep(100000);  // the slide sleeps 2 s here
            continue;
        }
        $frame = $stomp->readFrame();  // the slide drops the return value: $frame was undefined
        if (!$frame instanceof StompFrame || $frame->command !== 'MESSAGE') {
            fwrite(STDERR, 'hasFrame() was true, then readFrame() gave: ' . var_export($frame, true) . PHP_EOL);
            exit(4);
        }
        $email = json_decode($frame->body, false, 512, JSON_THROW_ON_ERROR);
        if (!isset($email->to, $email->subject, $email->message)) {
            fwrite(STDERR, "not an e-mail: {$frame->body}\n");
            exit(5);
        }
        // mail($email->to, $email->subject, $email->message, $email->headers);
        echo $frame->body, PHP_EOL;
        $stomp->ack($frame);
        $received++;
    }
    unset($stomp);
} catch (Throwable $e) {
    fwrite(STDERR, get_class($e) . ': ' . $e->getMessage() . PHP_EOL);
    exit(1);
}
